"""Candidate generators: the list of items every ranker of a run reorders.

Rankers are compared on identical candidates (DESIGN.md §2, lesson 2), so the generator runs once per user and its
output is shared. Score-based generators (embedding retrieval, NIR's user and item filtering, popularity) take a
scorer from :mod:`zsgen.score`, drop the user's history and keep the top ``n`` with ties going to the lower catalog
index. LLMRank's generator is the target plus random unseen items, shuffled with a per-user seed so that every ranker
and every rerun sees the same list. The full-catalog generator lists every unseen item in catalog order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.evaluate.config import CandidateConfig
from zsgen.metrics.ranks import tie_safe
from zsgen.metrics.split import IndexArray, UserCase, queries_for, user_rng

if TYPE_CHECKING:  # the scorers import lazily at run time; these names are for the type checker
    from zsgen.embed.base import Encoder
    from zsgen.score.base import Scorer, TrainData
    from zsgen.score.config import FusionConfig

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CandidateList:
    """One user's candidates in the generator's order (the order shown to rankers), with the generator's scores."""

    items: IndexArray
    scores: FloatArray

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def position_of(self, item: int) -> int | None:
        """Where ``item`` stands in the shown list (0-based), or None when the generator missed it."""
        hits = np.flatnonzero(self.items == item)
        return int(hits[0]) if hits.size else None


class CandidateGenerator(Protocol):
    name: str

    def generate(self, cases: Sequence[UserCase]) -> list[CandidateList]: ...


class ScorerGenerator:
    """Top ``n`` unseen items by a fitted :class:`zsgen.score.base.Scorer`; ``items`` restricts the choice to those
    items (the cold-item protocol shortlists among the cold items only)."""

    def __init__(self, scorer: Scorer, n: int, *, name: str, items: npt.ArrayLike | None = None) -> None:
        self.scorer = scorer
        self.n = n
        self.name = name
        self.items = None if items is None else np.unique(np.asarray(items, dtype=np.int64))

    def generate(self, cases: Sequence[UserCase]) -> list[CandidateList]:
        from zsgen.score.base import mask_history, top_k

        if not cases:
            return []
        queries = queries_for(cases)
        scores = mask_history(tie_safe(self.scorer.score(queries)), queries)
        if self.items is not None:
            allowed = np.zeros(scores.shape[1], dtype=bool)
            allowed[self.items] = True
            scores[:, ~allowed] = -np.inf
        top = top_k(scores, self.n)
        out = []
        for row, items in enumerate(top):
            values = scores[row, items]
            keep = np.isfinite(values)  # fewer unseen items than n: masked ones must not sneak in
            out.append(CandidateList(items=items[keep].astype(np.int64), scores=values[keep]))
        return out


class RandomGenerator:
    """LLMRank's list: the target and ``n - 1`` items the user has not seen, in a per-user seeded shuffle.

    The target is always in the list (even a re-consumed one), as in LLMRank; the scores only encode the shuffled
    order (strictly decreasing), so "generator order" on this list is a random ranking.
    """

    name = "random"

    def __init__(self, n_items: int, n: int, seed: int) -> None:
        if n < 2:
            raise ConfigError("the random generator needs n >= 2")
        self.n_items = n_items
        self.n = n
        self.seed = seed

    def generate(self, cases: Sequence[UserCase]) -> list[CandidateList]:
        out = []
        for case in cases:
            rng = user_rng(self.seed, case.user_id, "candidates")
            excluded = np.union1d(case.history, [case.target])
            pool = np.setdiff1d(np.arange(self.n_items, dtype=np.int64), excluded, assume_unique=False)
            negatives = rng.choice(pool, size=min(self.n - 1, pool.size), replace=False)
            items = rng.permutation(np.concatenate([[case.target], negatives]).astype(np.int64))
            scores = (items.size - np.arange(items.size, dtype=np.float64)) / items.size
            out.append(CandidateList(items=items, scores=scores))
        return out


class FullCatalogGenerator:
    """Every item not in the history, in catalog order (scores all 0: the order carries no information).

    ``items`` restricts the catalog to those items (the cold-item protocol ranks only the cold items); they are then
    listed in a per-user seeded shuffle (``seed``), as LLMRank's lists are. Rankers break ties by list order, and a
    signal that gives every cold item the same score (popularity) must rank them at random, not in catalog order:
    in ML-100K low item ids are the most-rated films, so catalog order alone would pass for a signal.
    """

    name = "full_catalog"

    def __init__(self, n_items: int, items: npt.ArrayLike | None = None, *, seed: int = 0) -> None:
        self.n_items = n_items
        self.items = None if items is None else np.unique(np.asarray(items, dtype=np.int64))
        self.seed = seed

    def generate(self, cases: Sequence[UserCase]) -> list[CandidateList]:
        everything = np.arange(self.n_items, dtype=np.int64) if self.items is None else self.items
        out = []
        for case in cases:
            items = np.setdiff1d(everything, case.history).astype(np.int64)
            if self.items is not None:
                items = user_rng(self.seed, case.user_id, "candidates").permutation(items)
            out.append(CandidateList(items=items, scores=np.zeros(items.size)))
        return out


class ScorerFactory:
    """Builds and fits scorers for one run, encoding the catalog's text once for every cosine scorer.

    ``item_vectors`` (unit rows in catalog order) skips encoding altogether, e.g. with vectors computed elsewhere.
    """

    def __init__(
        self,
        catalog: Catalog,
        train: TrainData,
        *,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        impute_cold: bool = False,
    ) -> None:
        self.catalog = catalog
        self.train = train
        self.encoder = encoder
        self.impute_cold = impute_cold  # fused scorers impute items without interactions (cold-item protocols)
        self._item_vectors: Any = item_vectors

    def fitted(
        self,
        kind: str,
        *,
        neighbours: int = 12,
        include_self: bool = True,
        user_vector: str | None = None,
        history_length: int | None = None,
        fusion: FusionConfig | None = None,
    ) -> Scorer:
        """A fitted scorer for a generator ``kind``: ``fused`` with ``fusion``, a
        :class:`zsgen.score.config.FusionConfig`, or any registered signal kind (:mod:`zsgen.score.registry`). The
        keyword options are the ``[candidates]`` table's flat fields; each kind takes those its parameter model has
        (``history_length`` is item filtering's ``recent``)."""
        from zsgen.score.registry import signal_kind

        if kind == "fused":
            from zsgen.score import FusedScorer

            if fusion is None:
                raise ConfigError("the fused scorer needs a fusion config")
            uses_text = any(signal_kind(signal.kind).uses_text for signal in fusion.signals.values())
            fused = FusedScorer(
                fusion,
                encoder=self.encoder,
                item_vectors=self.item_vectors() if uses_text else None,
                impute_cold=self.impute_cold,
            )
            return fused.fit(self.catalog, self.train)
        spec = signal_kind(kind)
        options: dict[str, Any] = {
            "neighbours": neighbours,
            "include_self": include_self,
            "user_vector": user_vector,
            "history_length": history_length,
            "recent": history_length,
        }
        fields = spec.params.model_fields
        params = {key: value for key, value in options.items() if key in fields and value is not None}
        return self.signal(spec.name, params)

    def signal(self, kind: str, params: Mapping[str, Any] | None = None) -> Scorer:
        """A fitted scorer of signal ``kind`` with ``params`` (checked by the kind's parameter model), built by the
        kind's one factory; text signals share the run's item vectors."""
        from zsgen.score.registry import SignalResources, signal_kind

        spec = signal_kind(kind)
        resources = SignalResources(encoder=self.encoder, item_vectors=self._item_vectors if spec.uses_text else None)
        unfitted = spec.build(spec.name, spec.validate_params(dict(params or {})), resources)
        scorer = unfitted.fit(self.catalog, self.train)
        if spec.uses_text and self._item_vectors is None:
            self._item_vectors = getattr(scorer, "item_vectors", None)
        return scorer

    def with_train(self, train: TrainData) -> ScorerFactory:
        """The same catalog, encoder and item vectors, fitting scorers on other training data (e.g. the validation
        split's, to build the candidate lists a fusion is tuned on)."""
        return ScorerFactory(
            self.catalog, train, encoder=self.encoder, item_vectors=self._item_vectors, impute_cold=self.impute_cold
        )

    def item_vectors(self) -> Any:
        """The catalog's unit item vectors, encoded on first use and shared by every text scorer of the run."""
        if self._item_vectors is None:
            self.signal("text")
        return self._item_vectors


def build_generator(
    config: CandidateConfig,
    factory: ScorerFactory,
    *,
    seed: int,
    fusion: FusionConfig | None = None,
    items: npt.ArrayLike | None = None,
) -> CandidateGenerator:
    """The configured generator; score-based ones get a scorer fitted on the training data (targets removed).
    ``fusion`` is the (tuned) fusion config of the ``fused`` generator; ``items`` restricts the full-catalog
    generator, or what a score-based generator may list, to those items (the cold-item protocol's cold items)."""
    n_items = len(factory.catalog)
    if config.generator == "random":
        return RandomGenerator(n_items, config.n, seed)
    if config.generator == "full_catalog":
        return FullCatalogGenerator(n_items, items, seed=seed)
    scorer = factory.fitted(
        config.generator,
        neighbours=config.neighbours,
        include_self=config.include_self,
        user_vector=config.user_vector,
        history_length=config.history_length,
        fusion=fusion,
    )
    return ScorerGenerator(scorer, config.n, name=config.generator, items=items)
