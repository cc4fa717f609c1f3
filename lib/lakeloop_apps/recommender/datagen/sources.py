"""Column values of generated rows, one chunk at a time: events, users and items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from lakeloop_apps.recommender.datagen.render import Col, Frame, hex_ids, vocabulary
from lakeloop_apps.recommender.datagen.world import (
    BRANDS,
    CATEGORIES,
    COUNTRIES,
    FAVOURITES,
    REVIEW_TEXTS,
    SEGMENTS,
    World,
    day_prices,
)

__all__ = ["Exposures", "EventColumns", "EVENT_TYPES", "events_frame", "event_frame", "users_frame",
           "items_frame", "unique_ids"]

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "like", "review")
_TYPE_P = np.array([0.55, 0.20, 0.10, 0.05, 0.06, 0.04])
_PRICED = np.array([True, True, True, True, False, False])      # like/review carry no price
_WITH_QUANTITY = np.array([False, False, True, True, False, False])  # others rely on the default 1
# share of sessions started in each hour of the day (UTC): quiet nights, lunch and evening peaks
HOUR_CURVE = np.array([2, 1.2, 0.8, 0.6, 0.6, 0.9, 1.8, 3.2, 4.5, 5, 5.2, 5.8,
                       6.5, 6.2, 5.4, 5.2, 5.3, 5.8, 6.6, 7.4, 7.8, 7, 5.2, 3.4])
HOUR_CURVE = HOUR_CURVE / HOUR_CURVE.sum()
_MEAN_SESSION = 6.0          # events per session
_MEAN_GAP_S = 40.0           # seconds between events of a session
FAVOURITE_P = np.array([0.6, 0.3, 0.1])
_P_TASTE_SESSION = 0.8       # session browses one of the user's favourite categories
_P_IN_CATEGORY = 0.7         # event's item comes from the session's category (else: anywhere, by popularity)
_P_FOLLOWS = 0.6            # a non-view event acts on the previous event's item (view -> cart -> purchase)
_RATING_P = np.array([0.06, 0.07, 0.14, 0.3, 0.43])
_QUANTITY_P = np.array([0.78, 0.14, 0.04, 0.02, 0.02])
_REVIEW_TEXTS = [t for texts in REVIEW_TEXTS for t in texts]


def unique_ids(seed: int, counters: np.ndarray, salt: int = 0) -> np.ndarray:
    """A bijective scramble of 64-bit counters (distinct counters give distinct ids), keyed by the
    seed and ``salt`` (one salt per kind of id, so that different kinds never look alike)."""
    key = ((seed * 0x9E3779B97F4A7C15) ^ (salt * 0xD1B54A32D192ED03)) & 0xFFFFFFFFFFFFFFFF
    x = counters.astype(np.uint64) ^ np.uint64(key)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class Exposures:
    """Per-user ranked lists of item ids shown to users (e.g. yesterday's recommendations), as CSR
    arrays; users react to them as :mod:`lakeloop_apps.recommender.datagen.response` says."""

    offsets: np.ndarray  # (users + 1,) into items, by user index
    items: np.ndarray    # item indexes (id - 1)

    @classmethod
    def build(cls, exposures: Mapping[int, Sequence[int]], n_users: int, n_items: int) -> Exposures:
        counts = np.zeros(n_users + 1, dtype=np.int64)
        flat: list[np.ndarray] = []
        for user_id in sorted(exposures):
            ids = np.asarray(exposures[user_id], dtype=np.int64)
            if not 1 <= user_id <= n_users:
                raise ValueError(f"exposures: user id {user_id} is not in 1..{n_users}")
            if len(ids) and (ids.min() < 1 or ids.max() > n_items):
                raise ValueError(f"exposures: user {user_id} has item ids outside 1..{n_items}")
            counts[user_id] = len(ids)
            flat.append(ids - 1)
        items = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
        return cls(offsets=np.cumsum(counts), items=items)


def _sessions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Session lengths (>= 1) summing to exactly ``n``."""
    lengths = rng.geometric(1.0 / _MEAN_SESSION, size=int(n / _MEAN_SESSION * 1.2) + 8)
    while lengths.sum() < n:
        lengths = np.concatenate([lengths, rng.geometric(1.0 / _MEAN_SESSION, size=len(lengths))])
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, n)) + 1
    lengths = lengths[:k].copy()
    lengths[-1] -= int(ends[k - 1]) - n
    return lengths


def _pick_items(w: World, rng: np.random.Generator, session_cat: np.ndarray) -> np.ndarray:
    n = len(session_cat)
    in_cat = rng.random(n) < _P_IN_CATEGORY
    cat_pick = np.searchsorted(w.category_cdf, session_cat + rng.random(n) * (1 - 1e-12), side="right")
    glob_pick = np.searchsorted(w.global_cdf, rng.random(n), side="right")
    item = np.where(in_cat, w.by_category[np.minimum(cat_pick, w.n_items - 1)], glob_pick)
    return np.minimum(item, w.n_items - 1)


def events_frame(w: World, rng: np.random.Generator, day: int, id_base: int, n: int, session_base: int) -> Frame:
    """``n`` events of ``day`` in sessions, sorted by time.

    ``id_base`` + row number is the event counter and ``session_base`` + session number the session
    counter: callers give each chunk disjoint counter ranges so that ids never collide.
    """
    lengths = _sessions(rng, n)
    n_sessions = len(lengths)
    session = np.repeat(np.arange(n_sessions), lengths)
    first = np.cumsum(lengths) - lengths
    position = np.arange(n) - first[session]

    user = np.searchsorted(w.user_activity_cdf, rng.random(n_sessions), side="right")
    user = np.minimum(user, w.n_users - 1)
    hour = rng.choice(24, size=n_sessions, p=HOUR_CURVE)
    start = day * 86400 + hour * 3600 + rng.integers(0, 3600, n_sessions)
    gaps = np.where(position == 0, 0, np.ceil(rng.exponential(_MEAN_GAP_S, n))).astype(np.int64)
    offset = np.cumsum(gaps)
    ts = np.minimum(start[session] + offset - offset[first][session], day * 86400 + 86399)

    favourite = w.user_favourites[user, rng.choice(FAVOURITES, size=n_sessions, p=FAVOURITE_P)]
    anywhere = np.searchsorted(np.cumsum(w.category_weight), rng.random(n_sessions), side="right")
    session_cat = np.where(rng.random(n_sessions) < _P_TASTE_SESSION, favourite,
                           np.minimum(anywhere, len(CATEGORIES) - 1))
    etype = np.where(position == 0, 0, rng.choice(len(EVENT_TYPES), size=n, p=_TYPE_P))
    item = _pick_items(w, rng, session_cat[session])
    # funnel: most non-view events act on the item of the event before them in the session; events
    # are still grouped by session here and a session starts with a view, so chains stay in-session
    follows = (etype != 0) & (rng.random(n) < _P_FOLLOWS)
    item = item[np.maximum.accumulate(np.where(follows, 0, np.arange(n)))]
    rating = rng.choice(5, size=n, p=_RATING_P) + 1
    text_pick = rng.integers(0, 3, n)
    quantity = rng.choice(len(_QUANTITY_P), size=n, p=_QUANTITY_P) + 1
    order = np.argsort(ts, kind="stable")
    columns = EventColumns(user=user[session][order], item=item[order], etype=etype[order], ts=ts[order],
                           session=session[order], rating=rating[order], text=text_pick[order],
                           quantity=quantity[order])
    return event_frame(w, day, id_base + order, session_base, columns)


@dataclass(frozen=True)
class EventColumns:
    """Events as index arrays, in the order they are written: user and item indexes (id - 1), index
    into ``EVENT_TYPES``, epoch seconds, session number, rating (1-5), review text pick (0-2), quantity."""

    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    rating: np.ndarray
    text: np.ndarray
    quantity: np.ndarray

    def take(self, index: np.ndarray) -> EventColumns:
        """The events at ``index``, in that order."""
        return EventColumns(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def event_frame(w: World, day: int, counters: np.ndarray, session_base: int, ev: EventColumns) -> Frame:
    """The rendered columns of events ``ev`` of ``day``: ids are scrambled ``counters`` (one per event)
    and ``session_base`` + session number; price is the item's price of the day."""
    is_review = ev.etype == EVENT_TYPES.index("review")
    return {
        "event_id": Col(hex_ids(unique_ids(w.seed, counters)), prefix="e"),
        "user_id": Col(ev.user + 1),
        "item_id": Col(ev.item + 1),
        "type": Col(vocabulary(EVENT_TYPES, ev.etype)),
        "ts": Col(ev.ts),
        "session_id": Col(hex_ids(unique_ids(w.seed, session_base + ev.session, salt=1)), prefix="s"),
        "price": Col(day_prices(w, day).price[ev.item], valid=_PRICED[ev.etype]),
        "quantity": Col(ev.quantity, valid=_WITH_QUANTITY[ev.etype]),
        "rating": Col(ev.rating, valid=is_review),
        "review_text": Col(vocabulary(_REVIEW_TEXTS, (ev.rating - 1) * 3 + ev.text), valid=is_review),
    }


def users_frame(w: World, row0: int, n: int) -> Frame:
    """Users ``row0 + 1`` .. ``row0 + n`` of the daily snapshot."""
    idx = np.arange(row0, row0 + n)
    age, segment = w.user_age[idx], w.user_segment[idx]
    return {
        "user_id": Col(idx + 1),
        "country": Col(vocabulary(COUNTRIES, w.user_country[idx])),
        "age": Col(age, valid=age >= 0, explicit_null=True),
        "signup_ts": Col(w.user_signup[idx]),
        "segment": Col(vocabulary(SEGMENTS, np.maximum(segment, 0)), valid=segment >= 0),
    }


def items_frame(w: World, day: int, row0: int, n: int) -> Frame:
    """Items ``row0 + 1`` .. ``row0 + n`` of the catalog export of ``day``."""
    idx = np.arange(row0, row0 + n)
    prices = day_prices(w, day)
    brand = w.item_brand[idx]
    return {
        "item_id": Col(idx + 1),
        "category": Col(vocabulary(CATEGORIES, w.item_category[idx])),
        "price": Col(prices.price[idx]),
        "brand": Col(vocabulary(BRANDS, np.maximum(brand, 0)), valid=brand >= 0),
        "updated_at": Col(prices.updated_at[idx]),
    }
