"""What the playground works on: the service's loaded dataset, recommender and rerank settings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from zsgen.catalog import Catalog
from zsgen.interactions import Dataset
from zsgen.recommender import Recommender
from zsgen.rerank import RerankConfig, Reranker

__all__ = ["MAX_TRY_USERS", "LiveView", "PlaygroundContext"]

#: The most users one "try on N users" may run: each is a real LLM call (or several), on the service's own backend.
MAX_TRY_USERS = 50


class LiveView(NamedTuple):
    """What one playground action works on, read once at its start so that it sees one consistent state: the catalog
    (titles, item texts), the recommender whose first stage gives the candidates, and how to get the reranker edited
    templates are cloned from (called only by actions that run a model; it returns ``None`` when there is none)."""

    catalog: Catalog
    recommender: Recommender
    reranker: Callable[[], Reranker | None]


@dataclass
class PlaygroundContext:
    """Everything the playground needs from the service that mounts it.

    ``dataset``: the loaded dataset; its interaction log (when it has one) gives the users to pick from and the
    held-out events of "try on N users". ``recommender``: its first stage gives the candidates and the first-stage
    order the reranked list is compared with. ``rerank_config``: the LLM backend and method templates run with (the
    page's template text replaces the method's last template); ``None`` means the recommender's own reranker's
    settings, and without either the page can render and check templates but not run them. ``template_dir``: where
    "save" writes, and the folder whose templates override the packaged ones in the page's template list.

    ``live``: for a service whose catalog changes while it runs (items put and retired), a function returning the
    current :class:`LiveView`; each action then uses the catalog, first stage and reranker of that moment, and
    ``recommender`` and ``dataset.catalog`` are only the starting state. Without it the view is fixed.

    ``max_try_users`` and ``default_try_users`` bound "try on N users"; ``resamples`` and ``seed`` drive its paired
    bootstrap interval (and which users are sampled); ``api_key`` reaches an ``openai`` backend that needs one.

    The reranker the playground builds is kept here; :meth:`close` releases its connections (the service calls it on
    shutdown). A reranker the recommender already has is shared, never closed here.
    """

    dataset: Dataset
    recommender: Recommender
    rerank_config: RerankConfig | None
    template_dir: Path
    max_try_users: int = MAX_TRY_USERS
    default_try_users: int = 10
    resamples: int = 1000
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    live: Callable[[], LiveView] | None = field(default=None, repr=False)
    _reranker: Reranker | None = field(default=None, init=False, repr=False)
    _owned: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def config(self) -> RerankConfig | None:
        """The rerank settings templates run with: ``rerank_config``, else the recommender's reranker's."""
        if self.rerank_config is not None:
            return self.rerank_config
        return self.recommender.reranker.config if self.recommender.reranker is not None else None

    def view(self) -> LiveView:
        """The state an action works on now (see ``live``)."""
        if self.live is not None:
            return self.live()
        return LiveView(self.dataset.catalog, self.recommender, self.reranker)

    def reranker(self) -> Reranker | None:
        """The reranker edited templates are cloned from (:meth:`Reranker.with_template`), built once on first use.

        The recommender's own is reused when its settings are the ones to run with, so that one client (or one loaded
        model) serves both the service and the playground."""
        with self._lock:
            if self._reranker is None:
                own = self.recommender.reranker
                if own is not None and (self.rerank_config is None or own.config == self.rerank_config):
                    self._reranker = own
                elif self.rerank_config is not None:
                    self._reranker = Reranker(self.rerank_config, catalog=self.dataset.catalog, api_key=self.api_key)
                    self._owned = True
            return self._reranker

    def close(self) -> None:
        """Close the reranker the playground built (not one it shares with the recommender)."""
        with self._lock:
            if self._reranker is not None and self._owned:
                self._reranker.close()
