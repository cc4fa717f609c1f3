"""The recommender's lookup service: the engine's service with the routes conf/base.yaml declares.

``serve.routes.recommendations`` in ``conf/base.yaml`` gives ``GET /v1/recommendations/{user_id}`` and
``POST /v1/recommendations`` (``{"user_ids": [...]}``); the ``serve`` job reads it from conf like any
key.  For code that starts the service without a conf (tests, benchmarks), :class:`ServeSettings`
defaults to those routes and :class:`RecommenderClient` adds ``recommendations(user_id)``.

>>> running = serve_in_thread(store)                            # doctest: +SKIP
>>> RecommenderClient(running.host, running.port).recommendations(42)  # doctest: +SKIP
(200, {'user_id': 42, 'items': [...], 'realtime': {...}})
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lakeloop.conf import load_conf
from lakeloop.paths import project_root
from lakeloop.serving import server
from lakeloop.serving.client import LookupClient

if TYPE_CHECKING:
    from lakeloop.conf import Conf
    from lakeloop.serving.base import ServingStore

__all__ = ["ROUTE", "routes", "description", "ServeSettings", "serve_in_thread", "RecommenderClient"]

#: the recommender's lookup route (``serve.routes.recommendations``)
ROUTE = "recommendations"


@lru_cache(maxsize=1)
def _conf() -> Conf:
    return load_conf("local", conf_dir=project_root() / "conf")


def routes() -> dict[str, Any]:
    """``serve.routes`` as the project's conf/base.yaml declares it."""
    return copy.deepcopy(_conf()["serve.routes"])


def description() -> str | None:
    """``serve.description`` of the project's conf/base.yaml."""
    return _conf()["serve.description"]


@dataclass(frozen=True)
class ServeSettings(server.ServeSettings):
    """:class:`lakeloop.serving.server.ServeSettings` whose routes and description default to the
    recommender's."""

    routes: Mapping[str, Any] = field(default_factory=routes)
    description: str | None = field(default_factory=description)


def serve_in_thread(store: ServingStore, settings: server.ServeSettings | None = None) -> server.RunningServer:
    """:func:`lakeloop.serving.server.serve_in_thread` with the recommender's routes by default."""
    return server.serve_in_thread(store, settings or ServeSettings(port=0))


class RecommenderClient(LookupClient):
    """:class:`~lakeloop.serving.client.LookupClient` with the recommender's route."""

    def recommendations(self, user_id: Any) -> tuple[int, Any]:
        """``GET /v1/recommendations/<user_id>``."""
        return self.lookup(ROUTE, user_id)
