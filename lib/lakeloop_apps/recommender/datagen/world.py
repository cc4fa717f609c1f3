"""The simulated shop: a catalog and a user population, both fixed by the seed.

Users and items keep their attributes from one day to the next (only item prices move), so that
daily snapshots and events of different days describe the same shop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lakeloop_apps.recommender.datagen.render import check_plain

__all__ = ["World", "DayPrices", "world", "day_prices", "rng_for", "CATEGORIES", "COUNTRIES", "SEGMENTS",
           "REVIEW_TEXTS", "EPOCH_DAY"]

# category tree: top level -> (leaf categories, median price in cents, brands)
_TREE: dict[str, tuple[tuple[str, ...], int, tuple[str, ...]]] = {
    "electronics": (("phones", "laptops", "audio", "cameras", "tablets"), 35000,
                    ("Voltix", "Nordtek", "Aperio", "Sonique", "Kiragi")),
    "home": (("kitchen", "furniture", "garden", "lighting"), 6000, ("Hearthly", "Oakmere", "Lumen & Co")),
    "fashion": (("shoes", "womens_clothing", "mens_clothing", "accessories"), 4500,
                ("Marlowe", "Tessel", "Rook Street", "Aveline")),
    "books": (("fiction", "non_fiction", "comics", "children"), 1500, ("Pagewright", "Inkwell Press")),
    "sports": (("outdoor", "fitness", "cycling"), 5500, ("Stridex", "Peakline", "Velocita")),
    "toys": (("games", "building_sets", "puzzles"), 2500, ("Brickly", "Playfold")),
    "beauty": (("skincare", "makeup", "fragrance"), 2200, ("Velour", "Maison Clé")),
    "grocery": (("snacks", "beverages", "coffee"), 800, ("Harvest Lane", "Bean & Leaf")),
}
CATEGORIES: tuple[str, ...] = tuple(f"{top}/{leaf}" for top, (leaves, _, _) in _TREE.items() for leaf in leaves)
_TOPS = tuple(_TREE)
_CAT_TOP = np.array([_TOPS.index(c.split("/")[0]) for c in CATEGORIES])
BRANDS: tuple[str, ...] = tuple(b for _, _, brands in _TREE.values() for b in brands)
_BRAND_COUNT = np.array([len(_TREE[t][2]) for t in _TOPS])
_BRAND_START = np.cumsum(_BRAND_COUNT) - _BRAND_COUNT

COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "ES", "IT", "NL", "PL", "SE", "CA", "AU", "MX")
_COUNTRY_WEIGHTS = np.array([30, 9, 9, 7, 10, 6, 5, 4, 4, 3, 3, 2, 4, 2, 2], dtype=float)
SEGMENTS = ("new", "casual", "loyal", "vip")

# review texts by rating (index 0 is rating 1)
REVIEW_TEXTS: tuple[tuple[str, ...], ...] = (
    ("Broke after two days.", "Not as described, returning it.", "Très décevant."),
    ("Poor quality for the price.", "Arrived late and scratched.", "Would not buy again."),
    ("It is okay.", "Does the job, nothing special.", "Average, as expected."),
    ("Good value.", "Works well, fast delivery.", "Sehr gut, gerne wieder."),
    ("Excellent, highly recommended!", "Love it ❤", "Perfect, exactly what I needed."),
)
for _words in (CATEGORIES, BRANDS, COUNTRIES, SEGMENTS):
    check_plain(_words)
for _words in REVIEW_TEXTS:  # JSON only
    check_plain(_words, csv=False)

EPOCH_DAY = dt.date(1970, 1, 1)
_CATALOG_START = (dt.date(2019, 1, 1) - EPOCH_DAY).days * 86400
_SIGNUP_START = (dt.date(2020, 1, 1) - EPOCH_DAY).days * 86400
_SPAN = 6 * 365 * 86400
ZIPF_EXPONENT = 1.1
FAVOURITES = 3  # favourite categories per user


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for ``(seed, *key)``: the same key always gives the same stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass(frozen=True, eq=False)
class World:
    """Catalog and users.  Arrays are indexed by ``id - 1``."""

    seed: int
    item_category: np.ndarray      # index into CATEGORIES
    item_base_price: np.ndarray    # cents
    item_brand: np.ndarray         # index into BRANDS, -1 for no brand
    item_created: np.ndarray       # epoch seconds
    item_weight: np.ndarray        # Zipf popularity, sums to 1
    by_category: np.ndarray        # item indexes sorted by category
    category_cdf: np.ndarray       # category index + cumulative weight within the category, per by_category
    global_cdf: np.ndarray         # cumulative item_weight
    category_weight: np.ndarray    # popularity of each category, sums to 1
    user_country: np.ndarray       # index into COUNTRIES
    user_age: np.ndarray           # -1 for unknown
    user_signup: np.ndarray        # epoch seconds
    user_segment: np.ndarray       # index into SEGMENTS, -1 when the export leaves it out
    user_activity_cdf: np.ndarray  # cumulative activity share
    user_favourites: np.ndarray    # (users, FAVOURITES) category indexes, most liked first

    @property
    def n_items(self) -> int:
        return len(self.item_category)

    @property
    def n_users(self) -> int:
        return len(self.user_country)


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return cdf


def _catalog(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cat_share = rng.dirichlet(np.full(len(CATEGORIES), 4.0))
    category = rng.choice(len(CATEGORIES), size=n, p=cat_share)
    medians = np.array([_TREE[_TOPS[t]][1] for t in _CAT_TOP])[category]
    price = np.maximum(99, np.round(medians * rng.lognormal(0.0, 0.6, n) / 100) * 100 - 1).astype(np.int64)
    top = _CAT_TOP[category]
    brand = (_BRAND_START[top] + (rng.random(n) * _BRAND_COUNT[top]).astype(np.int64)).astype(np.int64)
    brand[rng.random(n) < 0.08] = -1
    created = _CATALOG_START + rng.integers(0, _SPAN, n)
    rank = rng.permutation(n) + 1
    weight = 1.0 / rank.astype(float) ** ZIPF_EXPONENT
    return {"category": category, "price": price, "brand": brand, "created": created, "weight": weight / weight.sum()}


def _users(rng: np.random.Generator, n: int, category_weight: np.ndarray) -> dict[str, np.ndarray]:
    country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_WEIGHTS / _COUNTRY_WEIGHTS.sum())
    age = np.clip(np.round(rng.normal(36, 12, n)), 13, 90).astype(np.int64)
    age[rng.random(n) < 0.1] = -1
    signup = _SIGNUP_START + rng.integers(0, _SPAN, n)
    activity = rng.lognormal(0.0, 1.2, n)
    pct = np.argsort(np.argsort(activity)) / max(n - 1, 1)
    segment = np.select([pct >= 0.98, pct >= 0.8, signup > _SIGNUP_START + _SPAN - 120 * 86400],
                        [3, 2, 0], default=1)
    segment[rng.random(n) < 0.03] = -1
    favourites = rng.choice(len(CATEGORIES), size=(n, FAVOURITES), p=category_weight)
    return {"country": country, "age": age, "signup": signup, "segment": segment,
            "activity": activity, "favourites": favourites}


@lru_cache(maxsize=4)
def world(seed: int, n_users: int, n_items: int) -> World:
    """The shop for ``seed``; cached per process (Spark Python workers are reused across tasks)."""
    if n_users < 1 or n_items < 1:
        raise ValueError(f"datagen needs at least one user and one item (users={n_users}, items={n_items})")
    cat = _catalog(rng_for(seed, 0, 1), n_items)
    order = np.argsort(cat["category"], kind="stable")
    sorted_cat = cat["category"][order]
    w = cat["weight"][order]
    category_weight = np.bincount(cat["category"], weights=cat["weight"], minlength=len(CATEGORIES))
    within = np.zeros(n_items)
    for c in np.unique(sorted_cat):
        sel = sorted_cat == c
        within[sel] = _cdf(w[sel])
    users = _users(rng_for(seed, 0, 2), n_users, category_weight / category_weight.sum())
    return World(
        seed=seed, item_category=cat["category"], item_base_price=cat["price"], item_brand=cat["brand"],
        item_created=cat["created"], item_weight=cat["weight"], by_category=order,
        category_cdf=sorted_cat + within, global_cdf=_cdf(cat["weight"]),
        category_weight=category_weight / category_weight.sum(),
        user_country=users["country"], user_age=users["age"], user_signup=users["signup"],
        user_segment=users["segment"], user_activity_cdf=_cdf(users["activity"]),
        user_favourites=users["favourites"],
    )


@dataclass(frozen=True)
class DayPrices:
    """Item prices of one day: a few items are on sale, updated during the previous day."""

    price: np.ndarray       # cents
    updated_at: np.ndarray  # epoch seconds


_DISCOUNTS = np.array([100, 90, 80, 70])


@lru_cache(maxsize=8)
def day_prices(w: World, day: int) -> DayPrices:
    """Prices on ``day`` (days since 1970-01-01)."""
    rng = rng_for(w.seed, day, 0, 3)
    n = w.n_items
    discount = _DISCOUNTS[rng.choice(4, size=n, p=[0.9, 0.05, 0.03, 0.02])]
    changed = discount != 100
    price = np.maximum(1, w.item_base_price * discount // 100)
    updated = np.where(changed, day * 86400 - rng.integers(1, 86400, n), w.item_created)
    return DayPrices(price=price.astype(np.int64), updated_at=updated.astype(np.int64))
