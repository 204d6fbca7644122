"""Combining signals: per-user normalisation, weighted sums, reciprocal-rank fusion, and the fused scorer.

Raw scores live on unrelated scales (log counts, cosines, summed similarities), so each signal's row is first put
on a common per-user scale (see :class:`~zsgen.score.config.FusionConfig` for the definitions), then the rows are
summed with non-negative weights. Every transform is monotone and maps ties to ties, so a fusion with a single
non-zero weight ranks exactly as that signal does. Reciprocal-rank fusion is the same weighted sum over the transform
``1 / (k + rank)``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from zsgen.catalog import Catalog
from zsgen.embed.base import Encoder
from zsgen.errors import ConfigError, DataError
from zsgen.score.base import ScoreMatrix, Scorer, TrainData, UserQuery, not_fitted
from zsgen.score.config import FusionConfig, Method, Normalisation, SignalConfig
from zsgen.score.llm import CandidateScoreFn
from zsgen.score.registry import SignalResources, signal_kind
from zsgen.score.transfer.impute import IMPUTED_KINDS, ColdImputer, cold_imputer

logger = logging.getLogger(__name__)

NORMALISATIONS: tuple[Normalisation, ...] = ("rank", "zscore", "minmax", "none")


def _check(scores: npt.ArrayLike, name: str) -> ScoreMatrix:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise DataError(f"signal {name!r}: scores must be (users, items), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataError(f"signal {name!r}: scores must be finite (mask history after fusing, not before)")
    return matrix


def competition_ranks(scores: ScoreMatrix) -> ScoreMatrix:
    """1-based rank of each item within its row, best = 1; tied items share the best rank of their group."""
    return np.asarray(rankdata(-scores, method="min", axis=1), dtype=np.float64)


def normalise(scores: npt.ArrayLike, how: Normalisation, *, name: str = "scores") -> ScoreMatrix:
    """Put each row on a common scale (see :class:`~zsgen.score.config.FusionConfig`); constant rows become 0."""
    matrix = _check(scores, name)
    if how == "none":
        return matrix
    if how == "rank":
        n = matrix.shape[1]
        return np.asarray(1.0 - (competition_ranks(matrix) - 1.0) / max(n - 1, 1), dtype=np.float64)
    if how == "zscore":
        centred = matrix - matrix.mean(axis=1, keepdims=True)
        spread = matrix.std(axis=1, keepdims=True)
        return np.asarray(np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0), dtype=np.float64)
    if how == "minmax":
        low = matrix.min(axis=1, keepdims=True)
        span = matrix.max(axis=1, keepdims=True) - low
        return np.asarray(np.divide(matrix - low, span, out=np.zeros_like(matrix), where=span > 0), dtype=np.float64)
    raise ConfigError(f"normalisation must be one of {', '.join(NORMALISATIONS)}; got {how!r}")


def transform(
    scores: npt.ArrayLike, method: Method, normalisation: Normalisation, rrf_k: float, *, name: str
) -> ScoreMatrix:
    """What a signal contributes per unit of weight under ``method``."""
    if method == "rrf":
        return 1.0 / (rrf_k + competition_ranks(_check(scores, name)))
    return normalise(scores, normalisation, name=name)


def _weights(score_matrices: Mapping[str, Any], weights: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(score_matrices))
    if unknown:
        raise ConfigError(f"weights name signals without scores: {unknown}")
    bad = {k: v for k, v in weights.items() if not np.isfinite(v) or v < 0}
    if bad:
        raise ConfigError(f"weights must be finite and >= 0; got {bad}")
    used = {k: float(v) for k, v in weights.items() if v > 0}
    if not used:
        raise ConfigError("every weight is zero: nothing to fuse")
    return used


def weighted_sum(parts: Mapping[str, ScoreMatrix], used: Mapping[str, float]) -> ScoreMatrix:
    """``Σ weight · part`` over ``used`` in its order, in float64: the one summation every fused score goes through,
    so the weight search (:mod:`zsgen.evaluate.tuning`) sums bit for bit as :func:`combine` does."""
    shapes = {parts[k].shape for k in used}
    if len(shapes) != 1:
        raise DataError(f"signals disagree on the score shape: {sorted(shapes)}")
    total = np.zeros(next(iter(shapes)), dtype=np.float64)
    for name, weight in used.items():
        total += weight * parts[name]
    return total


def fuse(
    score_matrices: Mapping[str, npt.ArrayLike],
    weights: Mapping[str, float],
    *,
    normalisation: Normalisation = "zscore",
) -> ScoreMatrix:
    """``Σ weight · normalise(scores)``; signals with weight 0 (or absent from ``weights``) are not even read."""
    used = _weights(score_matrices, weights)
    parts = {k: normalise(score_matrices[k], normalisation, name=k) for k in used}
    return weighted_sum(parts, used)


def reciprocal_rank_fusion(
    score_matrices: Mapping[str, npt.ArrayLike],
    weights: Mapping[str, float] | None = None,
    *,
    k: float = 60.0,
) -> ScoreMatrix:
    """``Σ weight / (k + rank)`` with 1-based per-user ranks; all weights 1 when ``weights`` is ``None``."""
    if k <= 0:
        raise ConfigError(f"rrf k must be positive, got {k}")
    used = _weights(score_matrices, weights if weights is not None else dict.fromkeys(score_matrices, 1.0))
    parts = {name: transform(score_matrices[name], "rrf", "none", k, name=name) for name in used}
    return weighted_sum(parts, used)


def combine(score_matrices: Mapping[str, npt.ArrayLike], config: FusionConfig) -> ScoreMatrix:
    """Fuse the way ``config`` says (method, normalisation, weights)."""
    weights = {name: config.weight(name) for name in score_matrices if config.weight(name) > 0}
    if config.method == "rrf":
        return reciprocal_rank_fusion(score_matrices, weights, k=config.rrf_k)
    return fuse(score_matrices, weights, normalisation=config.normalisation)


# -- building scorers from a config ---------------------------------------------------------------------------------
def build_signal(
    name: str,
    signal: SignalConfig,
    *,
    encoder: Encoder | None = None,
    item_vectors: npt.ArrayLike | None = None,
    llm: CandidateScoreFn | None = None,
    llm_candidates: Scorer | None = None,
) -> Scorer:
    """An unfitted scorer for one configured signal, by its kind's registered factory
    (:mod:`zsgen.score.registry`). Text takes the shared encoder or item vectors; the LLM signal takes the
    candidate-scoring callable and the scorer that generates its candidates."""
    resources = SignalResources(encoder=encoder, item_vectors=item_vectors, llm=llm, llm_candidates=llm_candidates)
    return signal_kind(signal.kind).build(name, signal.params, resources)


class FusedScorer:
    """A :class:`~zsgen.score.base.Scorer` that fuses the configured signals with the configured weights.

    Signals with weight 0 are neither fitted nor scored, unless ``signals`` names which to fit (tuning fits every
    signal whatever its weight). With no logs (``train=None``), log-based signals are left out with a warning and the
    text signals carry the ranking; if nothing is left, ``fit`` raises. The LLM signal's candidates are the top items
    of the fusion of the other signals with positive weight. Item text is encoded once and shared by all text
    signals. ``impute_cold``: items without interactions get each log signal's scores of their warm text neighbours
    (:class:`~zsgen.score.transfer.impute.ColdImputer`), so they are ranked on the warm items' scale (the served
    first stage and the cold-item protocols do this; a single-signal fusion then no longer equals that signal on
    such items).
    """

    def __init__(
        self,
        config: FusionConfig,
        *,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        llm: CandidateScoreFn | None = None,
        name: str = "fused",
        signals: Sequence[str] | None = None,
        impute_cold: bool = False,
    ) -> None:
        self.config = config
        self.impute_cold = impute_cold
        self.name = name
        self._resources: dict[str, Any] = {"encoder": encoder, "item_vectors": item_vectors, "llm": llm}
        wanted = list(signals) if signals is not None else config.active()
        self._wanted = [s for s in wanted if s in config.signals]
        self.needs_logs = all(self._kind_needs_logs(s) for s in self._wanted)
        self.scorers: dict[str, Scorer] = {}
        self.imputer: ColdImputer | None = None  # items without interactions: log signals imputed (transfer.impute)
        self.n_items = 0  # the catalog's length: log signals fitted before items were added score fewer columns
        self._train: TrainData | None = None
        self._fitted: dict[str, Any] = {}  # the resources the scorers were fitted with (shared encoder, vectors)

    def _spec(self, signal: str) -> Any:
        return signal_kind(self.config.signals[signal].kind)

    def _kind_needs_logs(self, signal: str) -> bool:
        if self._spec(signal).candidates:
            return all(self._kind_needs_logs(s) for s in self._others(signal)) if self._others(signal) else False
        return bool(self._spec(signal).needs_logs)

    def _others(self, signal: str) -> list[str]:
        return [s for s in self._wanted if s != signal and not self._spec(s).candidates]

    def fit(self, catalog: Catalog, train: TrainData | None) -> FusedScorer:
        self.scorers = {}
        usable = [s for s in self._wanted if train is not None or not self._kind_needs_logs(s)]
        dropped = sorted(set(self._wanted) - set(usable))
        if dropped:
            logger.warning("no interaction log: leaving out log-based signals %s", dropped)
        if not usable:
            raise ConfigError(f"no usable signal: {sorted(self._wanted)} all need interaction logs, and there are none")
        resources = dict(self._resources)
        texts = [s for s in usable if self._spec(s).uses_text]
        if len(texts) > 1 and resources["item_vectors"] is None:
            from zsgen.itemtext import ItemTextTemplate

            if resources["encoder"] is None:
                from zsgen.embed import default_encoder

                resources["encoder"] = default_encoder()
            resources["item_vectors"] = resources["encoder"].encode(ItemTextTemplate().render_all(catalog))
        for signal in usable:
            config = self.config.signals[signal]
            candidates: Scorer | None = None
            if self._spec(signal).candidates:
                base = [s for s in usable if s != signal and not self._spec(s).candidates and self.config.weight(s) > 0]
                if not base:
                    raise ConfigError(f"LLM signal {signal!r} needs another signal with positive weight for candidates")
                candidates = FusedScorer(self.config, **resources, name=f"{signal}_candidates", signals=base)
            scorer = build_signal(signal, config, llm_candidates=candidates, **resources)
            self.scorers[signal] = scorer.fit(catalog, train)
        if self.impute_cold:
            self.imputer = cold_imputer(catalog, train, self.scorers, self.config, resources)
        self.n_items, self._train, self._fitted = len(catalog), train, resources
        return self

    def with_items(self, catalog: Catalog, new_vectors: npt.ArrayLike) -> FusedScorer | None:
        """This fusion over ``catalog``, which appends items without interactions to the fitted one, with nothing
        refitted: text signals get the new items' vectors (``new_vectors``, one row per appended item, encoded as
        the fitted items were), log signals stay the very fitted objects, and the new items' log scores are imputed
        from their warm text neighbours (:meth:`ColdImputer.for_new_items`), as a fit over ``catalog`` would;
        transfer signals place the new items through the maps they learnt (their own ``with_items``).

        ``None`` when this fusion cannot add items that way (an LLM signal, or log signals without imputation):
        the caller refits instead. ``self`` is left as it is."""
        if not self.scorers:
            raise not_fitted(self.name)
        added = np.asarray(new_vectors, dtype=np.float32)
        if added.ndim != 2 or len(catalog) != self.n_items + added.shape[0]:
            raise DataError(
                f"{added.shape} new item vectors for {len(catalog) - self.n_items} appended items", field="item_vectors"
            )
        kinds = {name: self.config.signals[name].kind for name in self.scorers}
        extends = {name for name, scorer in self.scorers.items() if callable(getattr(scorer, "with_items", None))}
        if any(kind != "text" and kind not in IMPUTED_KINDS and name not in extends for name, kind in kinds.items()):
            return None
        logged = any(kind in IMPUTED_KINDS for kind in kinds.values())
        if logged and not self.impute_cold:
            return None
        vectors = self._fitted.get("item_vectors")
        if vectors is None:
            vectors = next((getattr(s, "item_vectors", None) for s in self.scorers.values()), None)
        if vectors is None and logged:
            return None  # the imputer's neighbours need the fitted items' vectors
        out = copy.copy(self)
        out.scorers = dict(self.scorers)
        out._fitted = dict(self._fitted)
        if self._fitted.get("item_vectors") is not None:
            out._fitted["item_vectors"] = np.vstack([np.asarray(self._fitted["item_vectors"], np.float32), added])
        for name, kind in kinds.items():
            if kind == "text":
                scorer: Any = copy.copy(self.scorers[name])  # a TextCosineScorer: its fitted vectors extended
                scorer.item_vectors = np.ascontiguousarray(np.vstack([np.asarray(scorer.item_vectors), added]))
                out.scorers[name] = scorer
            elif name in extends:  # a transfer signal: the new items through what it learnt (its ``with_items``)
                out.scorers[name] = self.scorers[name].with_items(catalog, added)  # type: ignore[attr-defined]
        if logged and self._train is not None and vectors is not None:
            out.imputer = ColdImputer.for_new_items(self.imputer, self._train, vectors, added)
        out.n_items = len(catalog)
        return out

    def score_signals(self, queries: Sequence[UserQuery]) -> dict[str, ScoreMatrix]:
        """Every fitted signal's raw scores (for tuning, ablations and explanations)."""
        if not self.scorers:
            raise not_fitted(self.name)
        scores = {name: self._score_one(name, scorer, queries) for name, scorer in self.scorers.items()}
        if self.imputer is not None:
            scores = self.imputer.apply_all(scores, {name: self.config.signals[name].kind for name in scores})
        return scores

    def _score_one(self, name: str, scorer: Scorer, queries: Sequence[UserQuery]) -> ScoreMatrix:
        """One signal's scores over all :attr:`n_items`. A log signal fitted before items were added
        (:meth:`with_items`) knows nothing of them: they leave its queries' histories, and its columns for them
        are zeros until the imputer fills them."""
        fitted = self._train.n_items if self._train is not None else self.n_items
        if self.config.signals[name].kind not in IMPUTED_KINDS or fitted >= self.n_items:
            return scorer.score(queries)
        known = [dataclasses.replace(q, history=q.history[q.history < fitted]) for q in queries]
        scores = np.asarray(scorer.score(known), dtype=np.float64)
        return np.hstack([scores, np.zeros((scores.shape[0], self.n_items - scores.shape[1]))])

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        return combine(self.score_signals(queries), self.config)
