"""Fused scores as a first stage: the retrieval interface the recommender uses, backed by a tuned fusion.

``zsgen recommend`` reuses tuned weights by loading the resolved :class:`~zsgen.score.config.FusionConfig` a tuning
run wrote and handing a :class:`FusedRetriever` to the recommender in place of the cosine retriever: same
``retrieve`` / ``retrieve_batch`` calls, same :class:`~zsgen.types.Candidate` lists, best first, seen items left out.
Signals are fitted on the whole interaction log (nothing is held out when recommending); without a log only the text
signals are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, EmptyHistoryError, InvalidKError
from zsgen.interactions import Interactions
from zsgen.score.base import TrainData, UserQuery, mask_history, top_k
from zsgen.score.config import FusionConfig
from zsgen.score.fusion import FusedScorer
from zsgen.types import Candidate, History, Profile, Source

Request = tuple[History | None, Profile | str | None] | History | Profile


class FusedRetriever:
    """Top-k candidates by a fused score; a drop-in for :class:`zsgen.retrieve.Retriever` in the recommender.

    ``strategy`` and ``history_length`` of the retrieval calls are accepted for interface compatibility and ignored:
    each text signal carries its own in the config. ``threshold`` keeps only items whose fused score reaches it.
    """

    source: Source = "fusion"

    def __init__(
        self,
        catalog: Catalog,
        config: FusionConfig,
        interactions: Interactions | None = None,
        *,
        encoder: Any | None = None,
        item_vectors: npt.ArrayLike | None = None,
        llm: Any | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config
        train = (
            TrainData.from_interactions(interactions, holdout=0, n_items=len(catalog))
            if interactions is not None
            else None
        )
        self.scorer = FusedScorer(config, encoder=encoder, item_vectors=item_vectors, llm=llm).fit(catalog, train)

    @classmethod
    def from_file(
        cls, path: str | Path, catalog: Catalog, interactions: Interactions | None = None, **kw: Any
    ) -> FusedRetriever:
        """Load a (tuned) fusion config from TOML or JSON and fit it."""
        return cls(catalog, FusionConfig.load(path), interactions, **kw)

    def retrieve(
        self,
        history: History | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        threshold: float | None = None,
        **_ignored: Any,
    ) -> list[Candidate]:
        return self.retrieve_batch([(history, profile)], k=k, threshold=threshold)[0]

    def retrieve_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 20,
        threshold: float | None = None,
        **_ignored: Any,
    ) -> list[list[Candidate]]:
        """:meth:`retrieve` for many users; all of them are scored in one pass."""
        ks = [k] * len(requests) if isinstance(k, int) else list(k)
        if len(ks) != len(requests):
            raise InvalidKError(f"{len(ks)} values of k for {len(requests)} requests")
        if any(value < 1 for value in ks):
            raise InvalidKError(f"k must be at least 1, got {min(ks)}")
        queries = [self._query(request) for request in requests]
        if not queries:
            return []
        scores = mask_history(self.scorer.score(queries), queries)
        best = top_k(scores, max(ks))
        ids = self.catalog.ids
        out = []
        for row, want in enumerate(ks):
            items = [int(i) for i in best[row, :want] if np.isfinite(scores[row, i])]
            if threshold is not None:
                items = [i for i in items if scores[row, i] >= threshold]
            out.append([Candidate(id=ids[i], score=float(scores[row, i])) for i in items])
        return out

    def _query(self, request: Request) -> UserQuery:
        history: History | None
        profile: Profile | str | None
        if isinstance(request, History):
            history, profile = request, None
        elif isinstance(request, Profile):
            history, profile = None, request
        elif isinstance(request, tuple) and len(request) == 2:
            history, profile = request
        else:
            raise ConfigError(f"a retrieval request is a History, a Profile or a (history, profile) pair: {request!r}")
        text = profile.text if isinstance(profile, Profile) else profile
        items = self.catalog.indices_of(history.item_ids) if history is not None else []
        if not items and not (text and text.strip()):
            raise EmptyHistoryError("give a history (item ids) or a profile text")
        return UserQuery(history=np.asarray(items, dtype=np.int64), profile=text)
