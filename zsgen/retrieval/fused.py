"""Fused scores as a first stage: a tuned multi-signal fusion behind the one first-stage interface.

On data with an interaction log this is the recommender's default first stage, with the weights zsgen ships
(:meth:`FusedRetriever.packaged`, :meth:`~zsgen.score.config.FusionConfig.packaged`); ``zsgen recommend --fusion``
reuses tuned weights instead by loading the resolved :class:`~zsgen.score.config.FusionConfig` a tuning run wrote.
Either way the recommender sees the same :class:`~zsgen.retrieval.base.FirstStage` calls and the same
:class:`~zsgen.types.Candidate` lists, best first, seen items left out. Signals are fitted on the whole interaction
log (nothing is held out when recommending); without a log only the text signals are used.

How a history becomes a text query is part of the config (each text signal's ``user_vector`` and
``history_length``), so this stage takes no such options; the recommender refuses them for it rather than ignore
them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.embed.base import Encoder
from zsgen.errors import EmptyHistoryError, InvalidKError
from zsgen.interactions import Interactions
from zsgen.retrieval.base import Request, check_requests, per_request_k
from zsgen.score.base import TrainData, UserQuery, mask_history, top_k
from zsgen.score.config import FusionConfig
from zsgen.score.fusion import FusedScorer
from zsgen.score.llm import CandidateScoreFn
from zsgen.types import Candidate, History, Item, Profile, Source

#: ``weights_origin`` of the fusion zsgen ships, and of a config built in code.
PACKAGED = "packaged"
GIVEN = "given"


class FusedRetriever:
    """Top-k candidates by a fused score (a :class:`~zsgen.retrieval.base.FirstStage`, like the cosine
    :class:`~zsgen.retrieval.cosine.Retriever`).

    ``threshold`` keeps only items whose fused score reaches it. Each text signal's ``user_vector`` and
    ``history_length`` come from the config. ``weights_origin`` says where the weights came from, for the
    provenance of a :class:`~zsgen.types.Ranking`: :data:`PACKAGED` for zsgen's shipped defaults, the file's path
    for a loaded config, :data:`GIVEN` for a config built in code.
    """

    source: Source = "fusion"

    def __init__(
        self,
        catalog: Catalog,
        config: FusionConfig,
        interactions: Interactions | None = None,
        *,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        llm: CandidateScoreFn | None = None,
        weights_origin: str = GIVEN,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.weights_origin = weights_origin
        train = (
            TrainData.from_interactions(interactions, holdout=0, n_items=len(catalog))
            if interactions is not None
            else None
        )
        # Items without interactions (none in the log, or added since) are scored through their warm text
        # neighbours on the warm items' scale (zsgen.score.transfer.impute), so a new item competes at once.
        self._train = train
        self._options: dict[str, Any] = {"encoder": encoder, "item_vectors": item_vectors, "llm": llm}
        self.scorer = FusedScorer(config, encoder=encoder, item_vectors=item_vectors, llm=llm, impute_cold=True).fit(
            catalog, train
        )

    @classmethod
    def from_file(
        cls, path: str | Path, catalog: Catalog, interactions: Interactions | None = None, **kw: Any
    ) -> FusedRetriever:
        """Load a (tuned) fusion config from TOML or JSON and fit it."""
        return cls(catalog, FusionConfig.load(path), interactions, weights_origin=str(path), **kw)

    @classmethod
    def packaged(cls, catalog: Catalog, interactions: Interactions | None = None, **kw: Any) -> FusedRetriever:
        """The fusion zsgen ships (:meth:`~zsgen.score.config.FusionConfig.packaged`), fitted on ``interactions``."""
        return cls(catalog, FusionConfig.packaged(), interactions, weights_origin=PACKAGED, **kw)

    def with_items(self, items: Iterable[Item]) -> FusedRetriever | None:
        """This stage with ``items`` (new, without interactions) appended, nothing refitted: their text is encoded,
        their log-signal scores imputed from their warm text neighbours, their transfer-signal scores given by the
        maps those signals learnt (:meth:`FusedScorer.with_items`), so they compete with the warm items on the fused
        scale at once. ``self`` is unchanged (a live catalog swaps
        stages under concurrent readers). ``None`` when the fusion has signals that cannot take items this way
        (LLM signals): rebuild the stage then. Raises :class:`~zsgen.errors.DuplicateItemError` for an
        id the catalog has."""
        new = list(items)
        catalog = self.catalog.with_items(new)  # raises DuplicateItemError before anything is encoded
        if not new:
            return self
        scorer = self.scorer.with_items(catalog, self._encode(new))
        if scorer is None:
            return None
        out = copy.copy(self)
        out.catalog, out.scorer = catalog, scorer
        return out

    def add_items(self, items: Iterable[Item]) -> None:
        """Add new items in place (as :meth:`zsgen.retrieval.cosine.Retriever.add_items` does): by
        :meth:`with_items` where the fusion allows it, else by refitting the fusion over the extended catalog on
        the log it was fitted on."""
        new = list(items)
        stage = self.with_items(new)
        if stage is None:
            catalog = self.catalog.with_items(new)
            scorer = FusedScorer(self.config, **{**self._options, "item_vectors": None}, impute_cold=True)
            self.catalog, self.scorer = catalog, scorer.fit(catalog, self._train)
            return
        self.catalog, self.scorer = stage.catalog, stage.scorer

    def _encode(self, items: Sequence[Item]) -> npt.NDArray[np.float32]:
        """The new items' vectors, as the fitted items' were made (the shared encoder, the default item text)."""
        from zsgen.itemtext import ItemTextTemplate

        encoder = self.scorer._fitted.get("encoder") or next(
            (getattr(s, "encoder", None) for s in self.scorer.scorers.values() if getattr(s, "encoder", None)), None
        )
        if encoder is None:
            from zsgen.embed import default_encoder

            encoder = default_encoder()
        return np.asarray(encoder.encode(ItemTextTemplate().render_all(Catalog(list(items)))), dtype=np.float32)

    def retrieve(
        self,
        history: History | Sequence[str] | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        threshold: float | None = None,
    ) -> list[Candidate]:
        """The ``k`` best items for one user by fused score, best first, seen items left out."""
        return self.retrieve_batch([Request(history, profile)], k=k, threshold=threshold)[0]

    def retrieve_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 20,
        threshold: float | None = None,
    ) -> list[list[Candidate]]:
        """:meth:`retrieve` for many users; all of them are scored in one pass."""
        batch = check_requests(requests)
        ks = per_request_k(k, len(batch))
        if any(value < 1 for value in ks):
            raise InvalidKError(f"k must be at least 1, got {min(ks)}")
        queries = [self._query(request) for request in batch]
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
        text = request.profile_text
        items = self.catalog.indices_of(request.item_keys)
        if not items and not (text and text.strip()):
            raise EmptyHistoryError("give a history (item ids) or a profile text")
        return UserQuery(history=np.asarray(items, dtype=np.int64), profile=text)
