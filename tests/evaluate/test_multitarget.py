"""Multi-target metrics (precision, recall, F1, NDCG, HR, MRR) by hand, and their reduction to leave-one-out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zsgen.errors import ConfigError
from zsgen.metrics.metrics import metric_names, metric_values, parse_metric, rank_metrics


def _log_gain(rank: int) -> float:
    return 1.0 / math.log2(rank + 2)


def test_multi_target_values_by_hand() -> None:
    # user 0: targets at ranks 0, 3, 12 (three targets); user 1: one target not ranked, one at rank 1;
    # user 2: a single target missed altogether.
    ranks = [[0, 3, 12], [None, 1], [None]]
    values = rank_metrics(ranks, [5])
    assert list(values) == metric_names([5])
    assert values["HR@5"].tolist() == [1.0, 1.0, 0.0]
    assert values["Precision@5"].tolist() == pytest.approx([2 / 5, 1 / 5, 0.0])
    assert values["Recall@5"].tolist() == pytest.approx([2 / 3, 1 / 2, 0.0])
    f1_user0 = 2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3)
    f1_user1 = 2 * (1 / 5) * (1 / 2) / (1 / 5 + 1 / 2)
    assert values["F1@5"].tolist() == pytest.approx([f1_user0, f1_user1, 0.0])
    ideal0 = _log_gain(0) + _log_gain(1) + _log_gain(2)  # three targets, all could fit in the top 5
    ideal1 = _log_gain(0) + _log_gain(1)
    assert values["NDCG@5"].tolist() == pytest.approx(
        [(_log_gain(0) + _log_gain(3)) / ideal0, _log_gain(1) / ideal1, 0.0]
    )
    assert values["MRR"].tolist() == pytest.approx([1.0, 1 / 2, 0.0])


def test_ideal_dcg_is_capped_at_k() -> None:
    # Four targets, K = 2: the ideal list has two hits, so two targets at ranks 0 and 1 are a perfect NDCG@2.
    values = rank_metrics([[0, 1, 7, 9]], [2])
    assert values["NDCG@2"][0] == pytest.approx(1.0)
    assert values["Recall@2"][0] == pytest.approx(0.5)
    assert values["Precision@2"][0] == pytest.approx(1.0)


def test_single_target_lists_equal_leave_one_out_values() -> None:
    ranks = [0, 1, 4, 9, 10, None, 25]
    ks = [1, 5, 10, 20]
    flat = rank_metrics(ranks, ks)
    nested = rank_metrics([[r] for r in ranks], ks)
    for name in metric_names(ks):
        assert nested[name].tolist() == pytest.approx(flat[name].tolist()), name
    for k in ks:
        assert flat[f"Recall@{k}"].tolist() == flat[f"HR@{k}"].tolist()
        assert flat[f"Precision@{k}"].tolist() == pytest.approx((flat[f"HR@{k}"] / k).tolist())
        assert flat[f"F1@{k}"].tolist() == pytest.approx((2 * flat[f"HR@{k}"] / (k + 1)).tolist())
    # The single-target NDCG is the plain 1/log2(rank + 2) inside the cut-off.
    assert flat["NDCG@10"].tolist() == pytest.approx([_log_gain(r) if r is not None and r < 10 else 0.0 for r in ranks])


def test_new_metric_names_parse_and_select_values() -> None:
    assert parse_metric("recall@10") == ("recall", 10)
    assert parse_metric("Precision@5") == ("precision", 5)
    assert parse_metric("f1@20") == ("f1", 20)
    with pytest.raises(ConfigError, match="recall@10"):
        parse_metric("recall")
    ranks = [np.array([0, 3]), np.array([-1])]
    assert metric_values(ranks, "recall@2").tolist() == pytest.approx([0.5, 0.0])
    assert metric_values(ranks, "mrr@1").tolist() == pytest.approx([1.0, 0.0])


def test_committed_leave_one_out_run_reduces_to_single_target_values() -> None:
    """On a real run's log (the committed LLMRank-style run), the new metrics are the single-target ones."""
    import json
    from pathlib import Path

    from zsgen.evaluate.summary import record_ranks

    log = Path(__file__).resolve().parents[2] / "evaluation" / "results" / "llmrank-h5" / "per_user.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    ks = [1, 5, 10, 20]
    for ranker in records[0]["rankers"]:
        ranks = record_ranks(records, ranker)
        assert all(r is None or isinstance(r, int) for r in ranks)  # leave-one-out lines: one rank per user
        values = rank_metrics(ranks, ks)
        for k in ks:
            hr = values[f"HR@{k}"]
            assert values[f"Recall@{k}"].tolist() == hr.tolist()
            assert values[f"Precision@{k}"].tolist() == pytest.approx((hr / k).tolist())
            assert values[f"F1@{k}"].tolist() == pytest.approx((2 * hr / (k + 1)).tolist())
        # The same lines read as one-target lists give identical numbers for every metric.
        nested = rank_metrics([[r] for r in ranks], ks)
        for name, column in values.items():
            assert nested[name].tolist() == pytest.approx(column.tolist()), (ranker, name)
