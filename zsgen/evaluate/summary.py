"""From the per-user log to the numbers a report shows: metrics with intervals, paired differences, LLM costs.

Computed only from the log lines (never from in-memory state of the run), so a resumed run and an uninterrupted one
summarise identically. Bootstrap draws are seeded from the run seed and shared by all rankers, so a ranker's interval
and its paired difference come from the same resampled user sets.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from zsgen.evaluate.config import EvalConfig
from zsgen.evaluate.ranker_config import LLMRankerConfig
from zsgen.metrics.metrics import (
    Interval,
    bootstrap_indices,
    bootstrap_interval,
    metric_names,
    paired_difference,
    rank_metrics,
)
from zsgen.metrics.split import derive_seed

#: Lists up to this long get one position-bias bucket per position; longer ones get ``POSITION_BUCKETS`` buckets.
MAX_EXACT_POSITIONS = 20
POSITION_BUCKETS = 10


class PositionBucket(BaseModel):
    """Users whose target was shown at 1-based positions ``first``..``last``, and how well a ranker did on them."""

    first: int
    last: int
    users: int
    hit_rate: float
    ndcg: float


class LLMSummary(BaseModel):
    users: int
    fallback_rate: float
    repair_rate: float
    fallback_reasons: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    cost: float


class RankerSummary(BaseModel):
    name: str
    kind: str
    all_users: dict[str, Interval]
    target_in_candidates: dict[str, Interval]
    vs_baseline: dict[str, Interval] | None = None
    by_position: list[PositionBucket]
    llm: LLMSummary | None = None


class Summary(BaseModel):
    """Everything ``summary.json`` holds. ``headline`` is the cut-off used for plots and the position table."""

    name: str
    description: str
    protocol: str
    dataset: str  #: as the run's config.toml names it: relative to the output folder
    dataset_sha256: str | None = None  #: over the data files read (each file's digest is in config.toml)
    split: str
    generator: str
    history_length: int
    seed: int
    ks: list[int]
    headline_k: int
    bootstrap: int
    users: int
    users_with_target: int
    #: mean number of targets per user (1 for leave-one-out; several in the cold-start protocols)
    mean_targets: float = 1.0
    candidate_recall: float
    mean_candidates: float
    baseline: str | None
    rankers: list[RankerSummary]
    #: generator -> {N: share of users whose target is among its top N unseen items} (see zsgen.evaluate.recall)
    generator_recall: dict[str, dict[str, float]] = {}

    def ranker(self, name: str) -> RankerSummary:
        for entry in self.rankers:
            if entry.name == name:
                return entry
        raise KeyError(name)


def headline_k(ks: Sequence[int]) -> int:
    return 10 if 10 in ks else max(ks)


def position_buckets(max_candidates: int) -> list[tuple[int, int]]:
    """0-based inclusive position ranges: one per position for short lists, equal-width buckets for long ones."""
    if max_candidates <= MAX_EXACT_POSITIONS:
        return [(p, p) for p in range(max_candidates)]
    edges = np.linspace(0, max_candidates, POSITION_BUCKETS + 1).round().astype(int)
    return [(int(a), int(b) - 1) for a, b in itertools.pairwise(edges) if b > a]


def _llm_summary(entries: Sequence[Mapping[str, Any]], prices: tuple[float, float]) -> LLMSummary:
    latencies = np.array([float(e["latency_s"]) for e in entries], dtype=np.float64)
    prompt = sum(int(e["prompt_tokens"]) for e in entries)
    completion = sum(int(e["completion_tokens"]) for e in entries)
    reasons = Counter(str(e["fallback_reason"]) for e in entries if e["fallback"])
    n = max(len(entries), 1)
    return LLMSummary(
        users=len(entries),
        fallback_rate=sum(bool(e["fallback"]) for e in entries) / n,
        repair_rate=sum(e["parse_status"] == "repaired" for e in entries) / n,
        fallback_reasons=dict(sorted(reasons.items())),
        prompt_tokens=prompt,
        completion_tokens=completion,
        calls=sum(int(e["calls"]) for e in entries),
        latency_mean_s=float(latencies.mean()) if latencies.size else 0.0,
        latency_p50_s=float(np.quantile(latencies, 0.5)) if latencies.size else 0.0,
        latency_p95_s=float(np.quantile(latencies, 0.95)) if latencies.size else 0.0,
        cost=(prompt * prices[0] + completion * prices[1]) / 1e6,
    )


def record_ranks(records: Sequence[Mapping[str, Any]], ranker: str) -> list[int | None] | list[list[int | None]]:
    """``ranker``'s target ranks from log lines: one rank per user (leave-one-out lines, ``rank``), or per user the
    ranks of each target when the lines are multi-target (cold-start protocols log ``ranks``, one per target)."""
    entries = [r["rankers"][ranker] for r in records]
    if entries and all("ranks" in e for e in entries):
        return [list(e["ranks"]) for e in entries]
    return [e["rank"] for e in entries]


def summarize(
    config: EvalConfig,
    records: Sequence[Mapping[str, Any]],
    *,
    generator_recall: Mapping[str, Mapping[str, float]] | None = None,
    dataset_sha256: str | None = None,
) -> Summary:
    """Aggregate log lines (one per user, in the run's user order); ``generator_recall`` and ``dataset_sha256`` (of
    the data files read) are passed through. ``config`` is the config as recorded (dataset path relative to the
    output folder)."""
    ks = list(config.metrics.ks)
    names = metric_names(ks)
    k_head = headline_k(ks)
    n = len(records)
    positions = [r["target_position"] for r in records]
    covered = np.array([p is not None for p in positions], dtype=bool)
    draws = config.metrics.bootstrap
    idx_all = bootstrap_indices(n, resamples=draws, seed=derive_seed(config.seed, "bootstrap", "all")) if n else None
    n_cov = int(covered.sum())
    idx_cov = (
        bootstrap_indices(n_cov, resamples=draws, seed=derive_seed(config.seed, "bootstrap", "covered"))
        if n_cov
        else None
    )
    max_candidates = max((int(r["n_candidates"]) for r in records), default=0)
    buckets = position_buckets(max_candidates)
    shown = np.array([-1 if p is None else int(p) for p in positions], dtype=np.int64)

    per_ranker: dict[str, dict[str, np.ndarray]] = {}
    for spec in config.rankers:
        per_ranker[spec.name] = rank_metrics(record_ranks(records, spec.name), ks)
    baseline = config.baseline

    summaries = []
    for spec in config.rankers:
        values = per_ranker[spec.name]
        all_users = {m: bootstrap_interval(values[m], idx_all) for m in names}
        in_cands = {m: bootstrap_interval(values[m][covered], idx_cov) for m in names}
        vs = None
        if baseline is not None and spec.name != baseline:
            vs = {m: paired_difference(values[m], per_ranker[baseline][m], idx_all) for m in names}
        by_position = []
        for first, last in buckets:
            mask = (shown >= first) & (shown <= last)
            users = int(mask.sum())
            by_position.append(
                PositionBucket(
                    first=first + 1,
                    last=last + 1,
                    users=users,
                    hit_rate=float(values[f"HR@{k_head}"][mask].mean()) if users else float("nan"),
                    ndcg=float(values[f"NDCG@{k_head}"][mask].mean()) if users else float("nan"),
                )
            )
        llm = None
        if isinstance(spec, LLMRankerConfig):
            prices = (spec.cost_per_million_prompt_tokens, spec.cost_per_million_completion_tokens)
            llm = _llm_summary([r["rankers"][spec.name] for r in records], prices)
        summaries.append(
            RankerSummary(
                name=spec.name,
                kind=spec.kind,
                all_users=all_users,
                target_in_candidates=in_cands,
                vs_baseline=vs,
                by_position=by_position,
                llm=llm,
            )
        )
    return Summary(
        name=config.name,
        description=config.description,
        protocol=config.protocol,
        dataset=config.dataset.path,
        dataset_sha256=dataset_sha256,
        split=config.split,
        generator=config.candidates.generator,
        history_length=config.history_length,
        seed=config.seed,
        ks=ks,
        headline_k=k_head,
        bootstrap=draws,
        users=n,
        users_with_target=n_cov,
        mean_targets=float(np.mean([len(r.get("targets") or [r["target"]]) for r in records])) if n else 1.0,
        candidate_recall=n_cov / n if n else float("nan"),
        mean_candidates=float(np.mean([int(r["n_candidates"]) for r in records])) if n else 0.0,
        baseline=baseline,
        rankers=summaries,
        generator_recall={name: dict(values) for name, values in (generator_recall or {}).items()},
    )
