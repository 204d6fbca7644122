"""Choosing fusion weights on a validation split — never on the test.

The validation split is leave-one-out shifted by one: each user's *second-to-last* event is the target, the events
before it are the visible history, and signals are fitted on every user's events minus the last two. The test event
(the last one) is dropped before anything else is read, inside :func:`validation_split`, so no caller can hand test
targets to the search by accident.

:func:`tune_weights` is the search itself: a bounded set of weight vectors (see
:class:`~zsgen.score.config.SearchSpace`), each scored by a ranking metric of the validation target. Signals are
transformed once; each trial is then one weighted sum and one rank count per user.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.interactions import Interactions
from zsgen.score.base import IndexArray, ScoreMatrix, TrainData, UserQuery
from zsgen.score.config import FusionConfig, Method, Normalisation, SearchSpace, TuningRecord
from zsgen.score.fusion import FusedScorer, combine, transform

logger = logging.getLogger(__name__)

_METRIC = re.compile(r"^(ndcg|hr|mrr)(?:@(\d+))?$")


def parse_metric(metric: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; ``mrr`` may omit the cut-off, the others need it."""
    match = _METRIC.match(metric.strip().lower())
    if not match or (match.group(1) != "mrr" and match.group(2) is None):
        raise ConfigError(f"metric must look like ndcg@10, hr@10, mrr or mrr@10; got {metric!r}")
    k = int(match.group(2)) if match.group(2) else None
    if k is not None and k < 1:
        raise ConfigError(f"metric cut-off must be >= 1; got {metric!r}")
    return match.group(1), k


def target_ranks(
    scores: npt.NDArray[np.floating[Any]], targets: IndexArray, exclude: npt.NDArray[np.bool_] | None
) -> IndexArray:
    """0-based rank of each row's target column among the non-excluded columns.

    Ties are broken by column (lower first), the rule :func:`~zsgen.score.base.top_k` uses, so a tuned metric is the
    metric a top-k list would get. An excluded target ranks after everything.
    """
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, targets]
    beats = scores > target_scores[:, None]
    beats |= (scores == target_scores[:, None]) & (np.arange(scores.shape[1])[None, :] < targets[:, None])
    if exclude is not None:
        beats &= ~exclude
        ranks = beats.sum(axis=1)
        ranks[exclude[rows, targets]] = scores.shape[1]
        return np.asarray(ranks, dtype=np.int64)
    return np.asarray(beats.sum(axis=1), dtype=np.int64)


def metric_values(ranks: IndexArray, metric: str) -> npt.NDArray[np.float64]:
    """Per-user values of ``metric`` from 0-based target ranks."""
    kind, k = parse_metric(metric)
    hit = np.ones(ranks.shape, dtype=bool) if k is None else ranks < k
    if kind == "hr":
        return hit.astype(np.float64)
    if kind == "ndcg":
        return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return np.where(hit, 1.0 / (ranks + 1.0), 0.0)


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
                    start = dict(best[0])
                    for value in values[name]:
                        run({**start, name: value})
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
    exclude: npt.NDArray[np.bool_] | Sequence[IndexArray] | None = None,
    *,
    metric: str = "ndcg@10",
    search: SearchSpace | None = None,
    normalisation: Normalisation = "zscore",
    method: Method = "weighted",
    rrf_k: float = 60.0,
    columns: IndexArray | None = None,
    fixed: Mapping[str, float] | None = None,
    start: Mapping[str, float] | None = None,
) -> TuningResult:
    """Search fusion weights that maximise the mean ``metric`` of the validation ``targets``.

    ``candidate_scores``: per signal, ``(users, items)`` raw scores on the *validation* split. ``targets``: each
    row's target column. ``exclude``: columns that cannot be recommended (the history) as a boolean mask or per-row
    index lists. ``columns``: when the evaluation ranks a candidate list per user (e.g. target + 19 sampled items),
    the ``(users, n)`` catalog columns of those lists — signals are normalised over the whole row first, as
    :class:`FusedScorer` does, then restricted, and ``targets`` index into the lists. ``fixed``: signals held at a
    given weight while the others are searched. ``start``: a weight vector tried before the random and coordinate
    steps (signals it does not name weigh 0), so re-tuning a config — say after adding a signal — never returns
    weights that score lower on validation than the ones it started from.
    """
    search = search or SearchSpace()
    fixed = dict(fixed or {})
    names = list(candidate_scores)
    if not names:
        raise ConfigError("no signals to tune")
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ConfigError(f"fixed weights name signals without scores: {unknown}")
    target_cols = np.asarray(targets, dtype=np.int64)
    parts: dict[str, npt.NDArray[np.float32]] = {}
    for name in names:
        part = transform(candidate_scores[name], method, normalisation, rrf_k, name=name)
        if columns is not None:
            part = np.take_along_axis(part, np.asarray(columns, dtype=np.int64), axis=1)
        parts[name] = part.astype(np.float32)
    shape = parts[names[0]].shape
    if any(p.shape != shape for p in parts.values()) or target_cols.shape != (shape[0],):
        raise DataError(
            f"scores and targets disagree in shape: {[p.shape for p in parts.values()]}, {target_cols.shape}"
        )
    if target_cols.size and (target_cols.min() < 0 or target_cols.max() >= shape[1]):
        raise DataError("a target column is outside the score matrix")
    mask = _exclusion_mask(exclude, shape)

    def evaluate(weights: dict[str, float]) -> float:
        total: npt.NDArray[np.float32] = np.zeros(shape, dtype=np.float32)
        for name, weight in weights.items():
            if weight > 0:
                total += np.float32(weight) * parts[name]
        return float(metric_values(target_ranks(total, target_cols, mask), metric).mean())

    weights, value, trials = _search(evaluate, names, search, fixed, start)
    logger.info("tuned %s = %.4f over %d trials: %s", metric, value, len(trials), weights)
    return TuningResult(weights=weights, val_metric=value, metric=metric, trials=trials, users=int(shape[0]))


def _exclusion_mask(
    exclude: npt.NDArray[np.bool_] | Sequence[IndexArray] | None, shape: tuple[int, ...]
) -> npt.NDArray[np.bool_] | None:
    if exclude is None:
        return None
    if isinstance(exclude, np.ndarray) and exclude.dtype == bool:
        if exclude.shape != shape:
            raise DataError(f"exclude mask has shape {exclude.shape}, scores {shape}")
        return exclude
    if len(exclude) != shape[0]:
        raise DataError(f"{len(exclude)} exclusion lists for {shape[0]} rows")
    mask = np.zeros(shape, dtype=bool)
    for row, cols in enumerate(exclude):
        mask[row, np.asarray(cols, dtype=np.int64)] = True
    return mask


# -- the validation split ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationSplit:
    """Second-to-last event as target; ``train`` is every user's events minus the last two."""

    train: TrainData
    queries: list[UserQuery]
    targets: IndexArray
    users: IndexArray


def validation_split(
    interactions: Interactions, *, n_items: int, min_history: int = 1, users: IndexArray | None = None
) -> ValidationSplit:
    """Build the validation split; each user's last event is cut off first and never read.

    Users with fewer than ``min_history`` events before their validation target are skipped. ``users`` restricts
    the split to some user rows (e.g. a seeded sample).
    """
    train = TrainData.from_interactions(interactions, holdout=2, n_items=n_items)
    wanted = np.arange(interactions.n_users) if users is None else np.asarray(users, dtype=np.int64)
    orders = interactions.event_order_by_user()
    queries: list[UserQuery] = []
    targets: list[int] = []
    kept: list[int] = []
    for user in wanted:
        visible = orders[int(user)][:-1]  # the test event is dropped here, before any item is looked at
        if visible.size < 1 + max(min_history, 1):
            continue
        items = interactions.item_index[visible]
        queries.append(UserQuery(history=items[:-1].astype(np.int64), user=int(user)))
        targets.append(int(items[-1]))
        kept.append(int(user))
    if not queries:
        raise DataError("no user has enough events for a validation split", path=interactions.source)
    return ValidationSplit(
        train=train, queries=queries, targets=np.asarray(targets, dtype=np.int64), users=np.asarray(kept)
    )


def sample_candidates(
    queries: Sequence[UserQuery], targets: IndexArray, n_items: int, n: int = 20, *, seed: int = 0
) -> tuple[IndexArray, IndexArray]:
    """LLMRank-style lists: the target plus ``n - 1`` random items outside the history, shuffled per user.

    Returns ``(lists, target_positions)``. Each user's generator is seeded from ``(seed, row)``, so lists do not
    depend on which other users are in the batch.
    """
    lists = np.empty((len(queries), n), dtype=np.int64)
    positions = np.empty(len(queries), dtype=np.int64)
    for row, (query, target) in enumerate(zip(queries, targets, strict=True)):
        rng = np.random.default_rng([seed, row])
        blocked = np.zeros(n_items, dtype=bool)
        blocked[np.asarray(query.history, dtype=np.int64)] = True
        blocked[int(target)] = True
        pool = np.flatnonzero(~blocked)
        if pool.size < n - 1:
            raise DataError(f"query {row}: only {pool.size} unseen items, cannot sample {n - 1}")
        chosen = np.concatenate([[int(target)], rng.choice(pool, size=n - 1, replace=False)])
        rng.shuffle(chosen)
        lists[row] = chosen
        positions[row] = int(np.flatnonzero(chosen == target)[0])
    return lists, positions


def history_mask(queries: Sequence[UserQuery], n_items: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros((len(queries), n_items), dtype=bool)
    for row, query in enumerate(queries):
        mask[row, np.asarray(query.history, dtype=np.int64)] = True
    return mask


Protocol = Literal["full_catalog", "sampled"]


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
    **resources: Any,
) -> tuple[FusionConfig, TuningResult]:
    """Fit every configured signal on the validation training data, search weights, return the tuned config.

    ``protocol="full_catalog"`` ranks all unseen items; ``"sampled"`` ranks the target among ``n_candidates - 1``
    random unseen items (seeded). Non-LLM signals are tuned together first; an LLM signal (whose candidates depend on
    the other weights) is then fitted on the tuned fusion and its weight searched with the others held fixed.
    ``resources`` (``encoder``, ``item_vectors``, ``llm``) go to :class:`FusedScorer`.
    """
    split = validation_split(interactions, n_items=len(catalog), users=users)
    llm_signals = [n for n, s in config.signals.items() if s.kind == "llm"]
    base_signals = [n for n in config.signals if n not in llm_signals]
    base = FusedScorer(config, signals=base_signals, **resources).fit(catalog, split.train)
    scores = base.score_signals(split.queries)
    if protocol == "sampled":
        columns, targets = sample_candidates(split.queries, split.targets, len(catalog), n_candidates, seed=seed)
        exclude: npt.NDArray[np.bool_] | None = None
    else:
        columns, targets, exclude = None, split.targets, history_mask(split.queries, len(catalog))

    def run(matrices: Mapping[str, ScoreMatrix], fixed: Mapping[str, float] | None) -> TuningResult:
        return tune_weights(
            matrices,
            targets,
            exclude,
            metric=metric,
            search=config.search,
            normalisation=config.normalisation,
            method=config.method,
            rrf_k=config.rrf_k,
            columns=columns,
            fixed=fixed,
        )

    result = run(scores, None)
    if llm_signals:
        tuned = config.with_weights(result.weights)
        llm_scorer = FusedScorer(tuned, signals=[*base.scorers, *llm_signals], **resources).fit(catalog, split.train)
        llm_scores = {n: llm_scorer.scorers[n].score(split.queries) for n in llm_signals}
        result = run({**scores, **llm_scores}, result.weights)
    return config.with_weights(result.weights, result.record(source)), result


def fused_validation_scores(
    config: FusionConfig, catalog: Catalog, interactions: Interactions, **resources: Any
) -> tuple[ScoreMatrix, ValidationSplit]:
    """The tuned fusion's scores on the validation split (for reports: validation metric of the final config)."""
    split = validation_split(interactions, n_items=len(catalog))
    scorer = FusedScorer(config, **resources).fit(catalog, split.train)
    return combine(scorer.score_signals(split.queries), config), split


__all__ = [
    "Trial",
    "TuningResult",
    "ValidationSplit",
    "history_mask",
    "metric_values",
    "parse_metric",
    "sample_candidates",
    "target_ranks",
    "tune_on_validation",
    "tune_weights",
    "validation_split",
]
