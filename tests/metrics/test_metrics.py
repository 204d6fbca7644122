"""Metrics for one relevant item: cross-checked against ranx, and the protocol sanity value of random ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zsgen.evaluate.generators import CandidateList
from zsgen.evaluate.rankers import RandomRanker
from zsgen.metrics.metrics import (
    bootstrap_indices,
    bootstrap_interval,
    metric_names,
    paired_difference,
    rank_metrics,
)
from zsgen.metrics.split import UserCase

KS = [1, 5, 10, 20]


def test_hand_values() -> None:
    values = rank_metrics([0, 1, 9, 10, None], KS)
    assert values["HR@1"].tolist() == [1, 0, 0, 0, 0]
    assert values["HR@10"].tolist() == [1, 1, 1, 0, 0]
    assert values["HR@20"].tolist() == [1, 1, 1, 1, 0]
    assert values["NDCG@10"].tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0])
    assert values["MRR"].tolist() == pytest.approx([1.0, 0.5, 0.1, 1 / 11, 0.0])
    assert list(values) == metric_names(KS)


def test_metrics_agree_with_ranx_on_generated_runs() -> None:
    from ranx import Qrels, Run, evaluate

    rng = np.random.default_rng(0)
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    ranks: list[int | None] = []
    for u in range(300):
        n = int(rng.integers(5, 40))
        docs = [f"d{j}" for j in rng.permutation(200)[:n]]
        qid = f"q{u:04d}"  # zero-padded: ranx returns per-query values in sorted id order
        # Strictly decreasing scores: ranx (like trec_eval) re-sorts by score and breaks ties by id.
        run[qid] = {doc: float(n - position) for position, doc in enumerate(docs)}
        if rng.random() < 0.2:  # the target is not among the ranked items: a miss everywhere
            qrels[qid] = {"absent": 1}
            ranks.append(None)
        else:
            position = int(rng.integers(0, n))
            qrels[qid] = {docs[position]: 1}
            ranks.append(position)
    names = [f"hit_rate@{k}" for k in KS] + [f"ndcg@{k}" for k in KS] + ["mrr"]
    expected = evaluate(Qrels.from_dict(qrels), Run.from_dict(run), names, return_mean=False)
    ours = rank_metrics(ranks, KS)
    for k in KS:
        np.testing.assert_allclose(ours[f"HR@{k}"], expected[f"hit_rate@{k}"], atol=1e-12)
        np.testing.assert_allclose(ours[f"NDCG@{k}"], expected[f"ndcg@{k}"], atol=1e-12)
    np.testing.assert_allclose(ours["MRR"], expected["mrr"], atol=1e-12)


def test_random_ranking_of_20_candidates_gives_llmrank_ndcg() -> None:
    """LLMRank: a random order of 20 candidates scores NDCG@10 ≈ 0.227 (22.7 in the paper)."""
    users = 20000
    cases = [
        UserCase(user=u, user_id=str(u), history=np.zeros(0, np.int64), events=np.zeros(0, np.int64), target=0)
        for u in range(users)
    ]
    lists = [CandidateList(items=np.arange(20, dtype=np.int64), scores=np.zeros(20)) for _ in range(users)]
    outcomes = RandomRanker("random", seed=1).rank(cases, lists)
    ranks = [int(np.flatnonzero(o.order == 0)[0]) for o in outcomes]
    values = rank_metrics(ranks, KS)
    assert values["NDCG@10"].mean() == pytest.approx(0.227, abs=0.006)
    assert values["HR@10"].mean() == pytest.approx(0.5, abs=0.015)
    assert values["HR@20"].mean() == 1.0


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_users() -> None:
    rng = np.random.default_rng(3)
    small = (rng.random(100) < 0.3).astype(float)
    large = (rng.random(4000) < 0.3).astype(float)
    a = bootstrap_interval(small, bootstrap_indices(100, resamples=1000, seed=0))
    b = bootstrap_interval(large, bootstrap_indices(4000, resamples=1000, seed=0))
    assert a.low < a.mean < a.high and b.low < b.mean < b.high
    assert (b.high - b.low) < (a.high - a.low) / 3
    # Binomial standard error: the 95% interval is about ±1.96·sqrt(p(1-p)/n).
    assert (b.high - b.low) / 2 == pytest.approx(1.96 * math.sqrt(0.3 * 0.7 / 4000), rel=0.2)
    assert bootstrap_interval(small, bootstrap_indices(100, resamples=1000, seed=0)) == a  # seeded
    constant = bootstrap_interval(np.full(50, 0.4), bootstrap_indices(50, resamples=200, seed=1))
    assert constant.low == pytest.approx(0.4) and constant.high == pytest.approx(0.4)
    assert math.isnan(bootstrap_interval(np.zeros(0)).mean)


def test_paired_difference_is_tighter_than_separate_intervals() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(500)
    better = base + 0.02 + rng.normal(0, 0.01, 500)  # a small, consistent gain on every user
    idx = bootstrap_indices(500, resamples=1000, seed=2)
    diff = paired_difference(better, base, idx)
    assert diff.mean == pytest.approx(float((better - base).mean()))
    assert diff.low > 0  # the paired interval sees the gain ...
    assert bootstrap_interval(better, idx).low < bootstrap_interval(base, idx).high  # ... separate ones overlap
    same = paired_difference(base, base, idx)
    assert same.mean == same.low == same.high == 0.0
    with pytest.raises(ValueError):
        paired_difference(base, base[:10], idx)
