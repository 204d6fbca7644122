"""Support for experiment scripts (``evaluation/experiments/``): one dataset's validation and test splits, their
ranking tasks, signal scores computed once per split, and metric summaries.

Scripts that ask "does this signal or this weight search help?" score all users at once rather than running
``zsgen evaluate`` per variant. They must still rank exactly as a run does, or their numbers describe another
protocol; so this module only wires the protocol's own parts together (:func:`~zsgen.metrics.split.make_split`,
:func:`~zsgen.evaluate.protocol.ranking_task`, :func:`~zsgen.metrics.metrics.rank_metrics`) and a script keeps only
its question. With the same seed, the sampled task's test lists are those of ``zsgen evaluate`` with
``evaluation/configs/llmrank-all.toml``, and its validation lists those the run tunes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zsgen.errors import DataError
from zsgen.evaluate.protocol import Protocol, RankingTask, ranking_task
from zsgen.metrics.metrics import DEFAULT_KS, bootstrap_interval, metric_values, rank_metrics
from zsgen.metrics.split import Holdout, IndexArray, Split, make_split
from zsgen.score.base import ScoreMatrix
from zsgen.score.config import FusionConfig, SignalConfig
from zsgen.score.registry import signal_kind

FloatArray = npt.NDArray[np.float64]
HOLDOUTS: tuple[Holdout, ...] = ("validation", "test")


class Experiment:
    """A dataset with an interaction log, its validation and test splits (all users), and caches.

    ``seed`` and ``n_candidates`` set the sampled protocol's lists (the run seed and list length of an LLMRank-style
    config).
    """

    def __init__(
        self, data: str | Path, *, seed: int = 0, n_candidates: int = 20, data_format: str | None = None
    ) -> None:
        from zsgen.loaders import load_dataset

        dataset = load_dataset(data, format=data_format)
        if dataset.interactions is None:
            raise DataError("an experiment needs an interaction log", path=data)
        self.catalog = dataset.catalog
        self.interactions = dataset.interactions
        self.n_items = len(self.catalog)
        self.seed = seed
        self.n_candidates = n_candidates
        self.splits: dict[str, Split] = {
            holdout: make_split(self.interactions, holdout, n_items=self.n_items) for holdout in HOLDOUTS
        }
        self._vectors: npt.NDArray[np.float32] | None = None
        self._tasks: dict[tuple[str, str], RankingTask] = {}
        self._scores: dict[tuple[str, str], ScoreMatrix] = {}

    @property
    def val(self) -> Split:
        return self.splits["validation"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        """The catalog's item vectors from the packaged encoder, computed on first use and shared by text signals."""
        if self._vectors is None:
            from zsgen.embed import default_encoder
            from zsgen.itemtext import ItemTextTemplate

            encoded = default_encoder().encode(ItemTextTemplate().render_all(self.catalog))
            self._vectors = np.asarray(encoded, dtype=np.float32)
        return self._vectors

    def task(self, holdout: Holdout, protocol: Protocol) -> RankingTask:
        """The ranking task of ``protocol`` on a split (built once)."""
        key = (holdout, protocol)
        if key not in self._tasks:
            self._tasks[key] = ranking_task(
                self.splits[holdout], self.n_items, protocol, n=self.n_candidates, seed=self.seed
            )
        return self._tasks[key]

    def signal_scores(
        self, signals: Mapping[str, SignalConfig], holdout: Holdout, *, cache: bool = True, **resources: Any
    ) -> dict[str, ScoreMatrix]:
        """Each signal fitted on the split's training data and scored for its cases; text signals share
        :attr:`vectors`. Scores are kept per (split, signal config) unless ``cache`` is off or ``resources`` are
        given (an LLM callable, say, whose scores the key does not describe)."""
        out: dict[str, ScoreMatrix] = {}
        for name, signal in signals.items():
            key = (holdout, signal.model_dump_json())
            if key in self._scores:
                out[name] = self._scores[key]
                continue
            out[name] = self.scores_on({name: signal}, self.splits[holdout], **resources)[name]
            if cache and not resources:
                self._scores[key] = out[name]
        return out

    def scores_on(self, signals: Mapping[str, SignalConfig], split: Split, **resources: Any) -> dict[str, ScoreMatrix]:
        """Each signal fitted on ``split.train`` and scored for ``split``'s cases (any split, e.g. a deeper one)."""
        from zsgen.score.fusion import build_signal

        queries = split.queries
        out: dict[str, ScoreMatrix] = {}
        for name, signal in signals.items():
            vectors = self.vectors if signal_kind(signal.kind).uses_text else None
            scorer = build_signal(name, signal, item_vectors=vectors, **resources).fit(self.catalog, split.train)
            out[name] = scorer.score(queries)
        return out


class FusionProbe:
    """A fusion config's signals scored on both splits, with room for extra signals, ranked under one protocol.

    The common set-up of every "does X add to the committed fusion?" probe (``evaluation/experiments/archive/``):
    ``scores[holdout][name]`` holds raw scores per split; :meth:`add` puts a probe's own signal beside them, computed
    the same way on both splits; :meth:`fused` sums normalised signals as the fusion config does.
    """

    def __init__(self, exp: Experiment, fusion: FusionConfig, protocol: Protocol = "sampled") -> None:
        self.exp = exp
        self.fusion = fusion
        self.protocol: Protocol = protocol
        self.scores: dict[str, dict[str, ScoreMatrix]] = {
            holdout: exp.signal_scores(fusion.signals, holdout) for holdout in HOLDOUTS
        }

    def task(self, holdout: Holdout) -> RankingTask:
        return self.exp.task(holdout, self.protocol)

    def add(self, name: str, make: Callable[[Split], ScoreMatrix]) -> None:
        """A probe signal: ``make`` computes its scores from a split (its training data and cases)."""
        for holdout in HOLDOUTS:
            self.scores[holdout][name] = make(self.exp.splits[holdout])

    def add_signal(self, name: str, signal: SignalConfig) -> None:
        """A probe signal that zsgen can build (e.g. another co-occurrence variant)."""
        for holdout in HOLDOUTS:
            self.scores[holdout][name] = self.exp.signal_scores({name: signal}, holdout)[name]

    def solo(self, name: str, metric: str = "ndcg@10") -> float:
        """The signal alone, on validation."""
        return mean_metric(self.task("validation").ranks(self.scores["validation"][name]), metric)

    def fused(
        self, holdout: Holdout, weights: Mapping[str, float], *, scores: Mapping[str, ScoreMatrix] | None = None
    ) -> ScoreMatrix:
        """``Σ weight · normalise(scores)`` under the fusion config's normalisation (weights of either sign: a fitted
        probe may give negatives; zero weights are not read). ``scores`` replaces the stored ones (e.g. a subset)."""
        from zsgen.score.fusion import transform, weighted_sum

        source = self.scores[holdout] if scores is None else scores
        used = {name: float(w) for name, w in weights.items() if w != 0}
        parts = {
            name: transform(source[name], self.fusion.method, self.fusion.normalisation, self.fusion.rrf_k, name=name)
            for name in used
        }
        return weighted_sum(parts, used)

    def value(self, holdout: Holdout, weights: Mapping[str, float], metric: str = "ndcg@10") -> float:
        return mean_metric(self.task(holdout).ranks(self.fused(holdout, weights)), metric)


def query_times(split: Split) -> FloatArray:
    """Each case's time: its last visible history event (never the target's time)."""
    if split.train.timestamps is None:
        raise DataError("the log has no timestamps")
    stamps = split.train.timestamps
    return np.array([stamps[case.user][len(case.history) - 1] for case in split.cases], dtype=np.float64)


def training_events(split: Split) -> tuple[FloatArray, IndexArray]:
    """All training events of the split as ``(times, items)``, sorted by time."""
    if split.train.timestamps is None:
        raise DataError("the log has no timestamps")
    stamps = np.concatenate(split.train.timestamps)
    items = np.concatenate(split.train.sequences)
    order = np.argsort(stamps, kind="stable")
    return stamps[order], items[order].astype(np.int64)


def per_user(ranks: IndexArray, metric: str = "ndcg@10") -> FloatArray:
    """Per-user values of ``metric`` (``ndcg@10``, ``hr@10``, ``mrr`` ...) from target ranks."""
    return metric_values(ranks, metric)


def mean_metric(ranks: IndexArray, metric: str = "ndcg@10") -> float:
    return float(per_user(ranks, metric).mean())


def summarise(
    ranks: IndexArray, boot: npt.NDArray[np.int64] | None, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Every metric of the report (HR@K, NDCG@K, MRR) with its bootstrap interval over ``boot``'s resamples."""
    return {name: bootstrap_interval(v, boot).model_dump() for name, v in rank_metrics(ranks, ks).items()}
