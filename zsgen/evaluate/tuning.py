"""Choosing fusion weights on the validation split — never on the test — by the metric ``zsgen evaluate`` reports.

The validation split (:func:`zsgen.metrics.split.validation_split`) is leave-one-out shifted by one: each user's
*second-to-last* event is the target, the events before it are the visible history, and signals are fitted on every
user's events minus the last two; the test event is cut off before anything else is read.

Tuning is an evaluation run on that split, repeated for many weight vectors, so it lives here and uses the protocol's
own parts: the same cases and candidate lists (:func:`zsgen.evaluate.protocol.ranking_task`: for the sampled protocol
the run's own :class:`~zsgen.evaluate.generators.RandomGenerator` lists), the same fused sum
(:func:`zsgen.score.fusion.weighted_sum`, float64, in config order), the same tie rule
(:func:`zsgen.metrics.ranks.target_ranks`) and the same metric formulas (:func:`zsgen.metrics.metrics.metric_values`).
The value a search reports for a weight vector is therefore exactly what ``zsgen evaluate`` reports for those weights
on the validation split.

:func:`tune_weights` is the search itself: a bounded set of weight vectors (see
:class:`~zsgen.score.config.SearchSpace`), each scored by the validation metric. Signals are transformed once; each
trial is then one weighted sum and one rank count per user.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate.generators import CandidateList
from zsgen.evaluate.protocol import Protocol, RankingTask, ranking_task
from zsgen.interactions import Interactions
from zsgen.metrics.metrics import metric_values, parse_metric
from zsgen.metrics.ranks import NOT_RANKED, multi_target_ranks, target_ranks
from zsgen.metrics.split import IndexArray, Split, validation_split
from zsgen.score.base import ScoreMatrix
from zsgen.score.config import FusionConfig, Method, Normalisation, SearchSpace, TuningRecord
from zsgen.score.fusion import FusedScorer, transform, weighted_sum
from zsgen.score.registry import signal_kind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    weights: dict[str, float]
    value: float


@dataclass(frozen=True)
class TuningResult:
    """The chosen weights, their validation metric, and every trial in the order it ran."""

    weights: dict[str, float]
    val_metric: float
    metric: str
    trials: list[Trial] = field(default_factory=list)
    users: int = 0

    def record(self, source: str | None = None) -> TuningRecord:
        return TuningRecord(
            metric=self.metric, value=self.val_metric, trials=len(self.trials), users=self.users, source=source
        )


class _BudgetSpent(Exception):
    pass


def _search(
    evaluate: Callable[[dict[str, float]], float],
    names: Sequence[str],
    space: SearchSpace,
    fixed: Mapping[str, float],
    start: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], float, list[Trial]]:
    free = [n for n in names if n not in fixed]
    values = {n: space.values_for(n) for n in free}
    seen: dict[tuple[float, ...], float] = {}
    trials: list[Trial] = []
    best: tuple[dict[str, float], float] = ({}, -math.inf)

    def run(weights: dict[str, float]) -> float:
        nonlocal best
        full = {n: float(fixed.get(n, weights.get(n, 0.0))) for n in names}
        total = sum(full.values())
        if total <= 0:
            return -math.inf
        # Rankings do not change when all weights are scaled together, so (1, 1) and (2, 2) are one trial.
        key = tuple(round(full[n] / total, 12) for n in names)
        if key in seen:
            return seen[key]
        if len(trials) >= space.max_trials:
            raise _BudgetSpent
        value = evaluate(full)
        seen[key] = value
        trials.append(Trial(full, value))
        if value > best[1]:  # strictly better: the earliest of equal trials wins, deterministically
            best = (full, value)
        return value

    try:
        if any(v > 0 for v in fixed.values()):
            run({})  # the fixed signals alone: a free signal must strictly beat them to get any weight
        for name in free:
            run({name: 1.0})
        if start is not None:
            run(dict(start))  # a known vector (e.g. the config's weights): the search can only do better
        grid_size = math.prod(len(values[n]) for n in free)
        if grid_size <= space.max_trials - len(trials):
            for combo in itertools.product(*(values[n] for n in free)):
                run(dict(zip(free, combo, strict=True)))
        else:
            rng = np.random.default_rng(space.seed)
            for _ in range(space.samples):
                run({n: float(rng.choice(values[n])) for n in free})
            for _ in range(space.rounds):
                before = best[1]
                for name in free:
                    centre = dict(best[0])
                    for value in values[name]:
                        run({**centre, name: value})
                if best[1] <= before:
                    break
    except _BudgetSpent:
        logger.info("weight search stopped at its budget of %d trials", space.max_trials)
    if not trials:
        raise ConfigError("the weight search ran no trial (every candidate weight vector was all zeros)")
    return best[0], best[1], trials


def tune_weights(
    candidate_scores: Mapping[str, npt.ArrayLike],
    targets: npt.ArrayLike,
    exclude: npt.NDArray[np.bool_] | None = None,
    *,
    metric: str = "ndcg@10",
    search: SearchSpace | None = None,
    normalisation: Normalisation = "zscore",
    method: Method = "weighted",
    rrf_k: float = 60.0,
    columns: IndexArray | None = None,
    fixed: Mapping[str, float] | None = None,
    start: Mapping[str, float] | None = None,
    max_rank: int | None = None,
    target_sets: Sequence[npt.ArrayLike] | None = None,
) -> TuningResult:
    """Search fusion weights that maximise the mean ``metric`` of the validation ``targets``.

    ``candidate_scores``: per signal, ``(users, items)`` raw scores on the *validation* split, in the order the
    fusion config lists the signals (the order :func:`~zsgen.score.fusion.combine` sums them in). ``targets``: each
    row's target column. ``exclude``: a boolean mask of the columns that cannot be recommended (the history, see
    :func:`zsgen.score.base.history_mask`); an excluded target is a miss. ``columns``: when the evaluation ranks a
    candidate list per user (e.g. target + 19 sampled items), the ``(users, n)`` catalog columns of those lists in
    the order they are shown — signals are normalised over the whole row first, as
    :class:`~zsgen.score.fusion.FusedScorer` does, then restricted, ``targets`` are positions in the lists and ties
    go to the earlier position, as the rankers break them. ``fixed``: signals held at a given weight while the
    others are searched. ``start``: a weight vector tried before the random and coordinate steps (signals it does not
    name weigh 0), so re-tuning a config — say after adding a signal — never returns weights that score lower on
    validation than the ones it started from. ``max_rank``: ranks from there on are misses (the run ranks only the
    top ``max_rank`` items of the fused score itself). ``target_sets``: several target columns per row (cold-start
    protocols; -1 for a target not among the columns), ranked by
    :func:`~zsgen.metrics.ranks.multi_target_ranks` and scored by the multi-target metric formulas; ``targets``
    is then only checked for shape.
    """
    parse_metric(metric)  # a typo fails before any trial
    search = search or SearchSpace()
    fixed = dict(fixed or {})
    names = list(candidate_scores)
    if not names:
        raise ConfigError("no signals to tune")
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ConfigError(f"fixed weights name signals without scores: {unknown}")
    target_cols = np.asarray(targets, dtype=np.int64)
    parts: dict[str, ScoreMatrix] = {}
    for name in names:
        part = transform(candidate_scores[name], method, normalisation, rrf_k, name=name)
        if columns is not None:
            part = np.take_along_axis(part, np.asarray(columns, dtype=np.int64), axis=1)
        parts[name] = part
    shape = parts[names[0]].shape
    if any(p.shape != shape for p in parts.values()) or target_cols.shape != (shape[0],):
        raise DataError(
            f"scores and targets disagree in shape: {[p.shape for p in parts.values()]}, {target_cols.shape}"
        )
    if target_cols.size and (target_cols.min() < 0 or target_cols.max() >= shape[1]):
        raise DataError("a target column is outside the score matrix")
    if exclude is not None and exclude.shape != shape:
        raise DataError(f"exclude mask has shape {exclude.shape}, scores {shape}")

    sets = None if target_sets is None else [np.asarray(t, dtype=np.int64) for t in target_sets]
    if sets is not None and len(sets) != shape[0]:
        raise DataError(f"{len(sets)} target sets for {shape[0]} score rows")

    def evaluate(weights: dict[str, float]) -> float:
        used = {name: weight for name, weight in weights.items() if weight > 0}
        if sets is not None:
            multi = multi_target_ranks(weighted_sum(parts, used), sets, exclude)
            if max_rank is not None:
                for ranks_row in multi:
                    ranks_row[ranks_row >= max_rank] = NOT_RANKED
            return float(metric_values(multi, metric).mean())
        ranks = target_ranks(weighted_sum(parts, used), target_cols, exclude)
        if max_rank is not None:
            ranks[ranks >= max_rank] = NOT_RANKED
        return float(metric_values(ranks, metric).mean())

    weights, value, trials = _search(evaluate, names, search, fixed, start)
    logger.info("tuned %s = %.4f over %d trials: %s", metric, value, len(trials), weights)
    return TuningResult(weights=weights, val_metric=value, metric=metric, trials=trials, users=int(shape[0]))


def tune_on_validation(
    config: FusionConfig,
    catalog: Catalog,
    interactions: Interactions,
    *,
    metric: str = "ndcg@10",
    protocol: Protocol = "full_catalog",
    n_candidates: int = 20,
    seed: int = 0,
    users: IndexArray | None = None,
    source: str | None = None,
    candidates: Callable[[Split], Sequence[CandidateList]] | None = None,
    max_rank: int | None = None,
    split: Split | None = None,
    **resources: Any,
) -> tuple[FusionConfig, TuningResult]:
    """Fit every configured signal on the validation training data, search weights, return the tuned config.

    ``protocol="full_catalog"`` ranks all unseen items (``max_rank``: ranks from there on are misses, as when a run
    lists the fused score's own top ``n``); ``"sampled"`` ranks the target among ``n_candidates - 1`` random unseen
    items, the lists ``zsgen evaluate`` shows with the same ``seed``. ``candidates`` overrides both: it makes the
    candidate lists of the validation split (a run's generator, fitted on that split's training data), and each list
    is ranked as the run's rankers rank it. The search starts from the
    config's own weights, so the result never scores below them on validation. Non-LLM signals are tuned together
    first; an LLM signal (whose candidates depend on the other weights) is then fitted on the tuned fusion and its
    weight searched with the others held fixed. ``resources`` (``encoder``, ``item_vectors``, ``llm``) go to
    :class:`~zsgen.score.fusion.FusedScorer`. ``split`` replaces the leave-one-out validation split (the cold-start
    protocols pass their own, built from warm data only; :mod:`zsgen.evaluate.coldstart`).
    """
    parse_metric(metric)
    if split is None:
        split = validation_split(interactions, n_items=len(catalog), users=users)
    if candidates is not None:
        task = RankingTask.from_lists(split, candidates(split))
    else:
        task = ranking_task(split, len(catalog), protocol, n=n_candidates, seed=seed, max_rank=max_rank)
    llm_signals = [n for n, s in config.signals.items() if signal_kind(s.kind).candidates]
    base_signals = [n for n in config.signals if n not in llm_signals]
    base = FusedScorer(config, signals=base_signals, **resources).fit(catalog, split.train)
    queries = split.queries
    scores = base.score_signals(queries)

    def run(
        matrices: Mapping[str, ScoreMatrix], fixed: Mapping[str, float] | None, start: Mapping[str, float] | None
    ) -> TuningResult:
        return tune_weights(
            matrices,
            task.targets,
            task.exclude,
            metric=metric,
            search=config.search,
            normalisation=config.normalisation,
            method=config.method,
            rrf_k=config.rrf_k,
            columns=task.columns,
            fixed=fixed,
            start=start,
            max_rank=task.max_rank,
            target_sets=task.target_sets,
        )

    configured = {name: config.weight(name) for name in scores}
    result = run(scores, None, configured if any(w > 0 for w in configured.values()) else None)
    if llm_signals:
        tuned = config.with_weights(result.weights)
        llm_scorer = FusedScorer(tuned, signals=[*base.scorers, *llm_signals], **resources).fit(catalog, split.train)
        llm_scores = {n: llm_scorer.scorers[n].score(queries) for n in llm_signals}
        matrices = {**scores, **llm_scores}
        ordered = {name: matrices[name] for name in config.signals if name in matrices}  # combine's order
        start = {**result.weights, **{n: config.weight(n) for n in llm_signals}}
        result = run(ordered, result.weights, start)
    return config.with_weights(result.weights, result.record(source)), result


__all__ = ["Trial", "TuningResult", "tune_on_validation", "tune_weights"]
