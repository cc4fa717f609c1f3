"""The closed loop's response model: how users react the next day to the items served to them.

Each served (user, item, rank) pair is an impression.  The user views the item with a probability that
falls with its rank, clicks a viewed item and buys a clicked one with probabilities that grow with the
world's true affinity of the user for the item, so a model that serves items users really like earns
more clicks and purchases::

    P(view)              = 0.6 * 0.85 ** (rank - 1)
    P(click | view)      = 0.05 + 0.55 * affinity
    P(purchase | click)  = 0.05 + 0.45 * affinity

``affinity`` in [0, 1] is 0.8 x how much the item's category is among the user's favourite
categories (the share of the user's sessions that browse it, relative to the favourite one) plus
0.2 x the item's popularity percentile.  The reactions of a user form one session of the day:
a ``view`` of each viewed item in rank order, followed by its ``click`` and ``purchase``.  Draws come
from their own random stream keyed by ``(seed, day)``, so the same served lists always give the same
reactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from lakeloop_apps.recommender.datagen.sources import EVENT_TYPES, FAVOURITE_P, HOUR_CURVE, EventColumns, Exposures
from lakeloop_apps.recommender.datagen.world import World, rng_for

__all__ = ["Reactions", "affinity", "react", "REACTION_TYPES"]

P_VIEW_TOP = 0.6          # the first served item is viewed this often
POSITION_DECAY = 0.85     # each lower rank is viewed this much less often
CLICK = (0.05, 0.55)      # P(click | view) = CLICK[0] + CLICK[1] * affinity
PURCHASE = (0.05, 0.45)   # P(purchase | click) = PURCHASE[0] + PURCHASE[1] * affinity
_MEAN_GAP_S = 40.0        # seconds between the events of a reaction session
_STREAM = 4               # random stream key: sources use 1-3
REACTION_TYPES = tuple(EVENT_TYPES.index(t) for t in ("view", "click", "purchase"))


@lru_cache(maxsize=4)
def _popularity_percentile(w: World) -> np.ndarray:
    rank = np.argsort(np.argsort(w.item_weight))
    return rank / max(w.n_items - 1, 1)


def affinity(w: World, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """True affinity in [0, 1] of users for items (index arrays, id - 1), see the module docstring."""
    favourite = w.user_favourites[user] == w.item_category[item][:, None]
    share = (favourite * FAVOURITE_P).sum(axis=1) / FAVOURITE_P[0]  # FAVOURITE_P: sessions per favourite
    return 0.8 * np.minimum(share, 1.0) + 0.2 * _popularity_percentile(w)[item]


@dataclass(frozen=True)
class Reactions:
    """The reaction events of one day and what they amount to."""

    events: EventColumns
    exposed_users: int
    served_items: int
    counts: dict[str, int]

    def summary(self) -> dict[str, Any]:
        """Manifest figures: impressions, events by type, click-through and purchase rate of served items."""
        served = self.served_items
        return {"exposed_users": self.exposed_users, "served_items": served, "events": len(self.events.ts),
                **self.counts,
                "ctr": round(self.counts["clicks"] / served, 6) if served else None,
                "purchase_rate": round(self.counts["purchases"] / served, 6) if served else None}


def _funnel(rng: np.random.Generator, rank: np.ndarray, aff: np.ndarray) -> np.ndarray:
    """Per impression: 0 not viewed, 1 viewed, 2 clicked, 3 bought."""
    n = len(rank)
    viewed = rng.random(n) < P_VIEW_TOP * POSITION_DECAY ** rank
    clicked = viewed & (rng.random(n) < CLICK[0] + CLICK[1] * aff)
    bought = clicked & (rng.random(n) < PURCHASE[0] + PURCHASE[1] * aff)
    return viewed.astype(np.int64) + clicked + bought


def _timestamps(rng: np.random.Generator, day: int, session: np.ndarray) -> np.ndarray:
    """Epoch seconds of events numbered by session (0, 0, 1, ...): each session starts at an hour of
    the day curve and its events follow each other at exponential gaps."""
    first = np.flatnonzero(np.diff(session, prepend=-1))
    start = day * 86400 + rng.choice(24, size=len(first), p=HOUR_CURVE) * 3600 + rng.integers(0, 3600, len(first))
    offset = np.cumsum(np.ceil(rng.exponential(_MEAN_GAP_S, len(session))).astype(np.int64))
    ts = start[session] + offset - offset[first][session]
    return np.minimum(ts, day * 86400 + 86399)


def react(w: World, exposures: Exposures, seed: int, day: int) -> Reactions:
    """The reactions on ``day`` (days since 1970-01-01) of exposed users to their served lists,
    grouped by user in rank order (not sorted by time)."""
    rng = rng_for(seed, day, _STREAM)
    lengths = np.diff(exposures.offsets)
    user = np.repeat(np.arange(len(lengths)), lengths)
    rank = np.arange(len(exposures.items)) - exposures.offsets[user]
    item = exposures.items
    stage = _funnel(rng, rank, affinity(w, user, item))
    pair = np.repeat(np.arange(len(stage)), stage)  # a viewed item gives 1 event, a clicked one 2, a bought one 3
    step = np.arange(len(pair)) - np.repeat(np.cumsum(stage) - stage, stage)
    ev_user = user[pair]
    session = np.cumsum(np.diff(ev_user, prepend=ev_user[:1]) != 0)
    ones = np.ones(len(pair), dtype=np.int64)
    events = EventColumns(user=ev_user, item=item[pair], etype=np.asarray(REACTION_TYPES, np.int64)[step],
                          ts=_timestamps(rng, day, session), session=session, rating=ones, text=0 * ones,
                          quantity=ones)
    counts = {name: int((stage > k).sum()) for k, name in enumerate(("views", "clicks", "purchases"))}
    return Reactions(events=events, exposed_users=int(np.count_nonzero(lengths)), served_items=len(item),
                     counts=counts)
