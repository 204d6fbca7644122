"""More probes for the LLMRank-style gap: other collaborative signal families, and better ways to set the weights.

``fusion_probes.py`` showed the item-neighbourhood family saturated (validation ~0.775, test ~0.739 on the sampled
protocol, goal 0.75). This script asks whether anything *outside* that family, or a better weight search, moves the
test value. Every choice is made on validation (the second-to-last event, or earlier events for probe 4); test is
read once per probe, with the same candidate lists (target + 19 random unseen items, seeded per user).

Probes:
1. signals from other families, each alone on validation: EASE (closed-form item-item ridge regression; strictly a
   fitted model, included as the strongest simple collaborative baseline), RP³β (a three-step random walk
   user→item→user→item with popularity penalised by ``count**β``; training-free), session-kNN (user-kNN whose
   query is the recency-weighted last items and whose similarity is cosine), a Bayesian mean-rating prior, the count
   of ratings ≥ 4, and popularity counted only in a window before the user's time;
2. the best of each added to the committed fusion, re-tuned from the committed weights (``tune_weights(start=...)``,
   so a signal can only be kept if it beats them on validation);
3. the six committed signals with continuous weights fitted by a listwise softmax loss on validation (L-BFGS),
   instead of the grid search;
4. the weight search on a pooled validation set: the 2nd- to 6th-to-last events of every user, each with its own
   training data, so the weights are chosen on up to five times as many targets;
5. where the committed fusion loses between validation and test: NDCG@10 by the target's training count and by
   history length, on both splits (diagnostic only, nothing is chosen).

The candidate lists are those of ``zsgen evaluate``'s LLMRank-style protocol (seed 0: the test lists of
``evaluation/configs/llmrank-all.toml``), built by ``zsgen.evaluate.experiment``.

Run:  HF_HUB_OFFLINE=1 python evaluation/experiments/archive/graph_and_tuning_probes.py   (about a minute on 2
      cores; output kept in evaluation/results/graph_and_tuning_probes.txt)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from zsgen.evaluate.experiment import Experiment, FusionProbe, per_user, query_times, training_events
from zsgen.evaluate.protocol import ranking_task
from zsgen.evaluate.tuning import tune_weights
from zsgen.metrics.split import Split, UserCase, holdout_events
from zsgen.score.base import ScoreMatrix, TrainData, history_matrix, top_k
from zsgen.score.config import FusionConfig
from zsgen.score.fusion import transform

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
FUSION = ROOT / "evaluation" / "configs" / "fusion" / "sampled.toml"
DAY = 86400.0


# -- signals outside the item-neighbourhood family -----------------------------------------------------------------
def ease(split: Split, lam: float, recent: int | None, decay: float) -> ScoreMatrix:
    x = split.train.incidence()
    gram = (x.T @ x).toarray() + lam * np.eye(split.train.n_items)
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return np.asarray(history_matrix(split.queries, split.train.n_items, recent=recent, decay=decay) @ weights)


def rp3beta(split: Split, beta: float, recent: int | None, decay: float) -> ScoreMatrix:
    x = split.train.incidence()
    user_counts = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
    item_counts = np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1.0)
    user_to_item = sp.diags(1.0 / user_counts) @ x
    item_to_user = sp.diags(1.0 / item_counts) @ x.T
    walk = (item_to_user @ user_to_item).toarray() / item_counts[None, :] ** beta
    np.fill_diagonal(walk, 0.0)
    return np.asarray(history_matrix(split.queries, split.train.n_items, recent=recent, decay=decay) @ walk)


def session_knn(split: Split, neighbours: int, recent: int, decay: float) -> ScoreMatrix:
    x = split.train.incidence()
    lengths = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
    query = history_matrix(split.queries, split.train.n_items, recent=recent, decay=decay)
    similarity = np.asarray((query @ x.T).toarray()) / np.sqrt(lengths)[None, :]
    own = np.array([case.user for case in split.cases], dtype=np.int64)
    similarity[np.arange(own.size), own] = -np.inf  # the user's own training row is the user
    chosen = top_k(similarity, neighbours)
    weights = np.take_along_axis(similarity, chosen, axis=1)
    weights = np.where(np.isfinite(weights), weights, 0.0)
    rows = np.repeat(np.arange(own.size), neighbours)
    mixing = sp.csr_matrix((weights.ravel(), (rows, chosen.ravel())), shape=(own.size, x.shape[0]))
    return np.asarray((mixing @ x).toarray())


class Ratings:
    """Ratings of each split's training events (the held-out events' ratings are never read)."""

    def __init__(self, probe: FusionProbe) -> None:
        self.interactions = probe.exp.interactions

    def events(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        inter = self.interactions
        cut = holdout_events(split.holdout)
        positions = np.concatenate([p[:-cut] for p in inter.event_order_by_user()])
        return inter.item_index[positions], inter.rating[positions]

    def mean_rating(self, split: Split, prior: float) -> ScoreMatrix:
        items, ratings = self.events(split)
        counts = np.bincount(items, minlength=split.train.n_items)
        sums = np.bincount(items, weights=ratings, minlength=split.train.n_items)
        shrunk = (sums + prior * ratings.mean()) / (counts + prior)
        return np.tile(shrunk, (len(split.cases), 1))

    def liked(self, split: Split) -> ScoreMatrix:
        items, ratings = self.events(split)
        return np.tile(np.log1p(np.bincount(items[ratings >= 4], minlength=split.train.n_items)), (len(split.cases), 1))


def recent_popularity(split: Split, window: float) -> ScoreMatrix:
    stamps, items = training_events(split)
    out = np.empty((len(split.cases), split.train.n_items))
    for row, t in enumerate(query_times(split)):
        lo, hi = np.searchsorted(stamps, [t - window, t], side="right")
        out[row] = np.log1p(np.bincount(items[lo:hi], minlength=split.train.n_items))
    return out


# -- helpers --------------------------------------------------------------------------------------------------------
def zscored(matrix: ScoreMatrix, name: str) -> ScoreMatrix:
    return transform(matrix, "weighted", "zscore", 60.0, name=name)


def value(probe: FusionProbe, holdout: str, weights: Mapping[str, float]) -> float:
    """NDCG@10 of the committed normalisation (z-scores) summed with ``weights`` (either sign: the softmax fit may
    give negatives)."""
    return probe.value("validation" if holdout == "val" else "test", weights)


def best_variant(probe: FusionProbe, family: str, variants: Mapping[str, Callable[[Split], ScoreMatrix]]) -> str:
    values = {}
    for label, make in variants.items():
        probe.add(label, make)
        values[label] = probe.solo(label)
    best = max(values, key=lambda label: values[label])
    shown = ", ".join(f"{label} {v:.4f}" for label, v in values.items())
    print(f"  {family}: {shown}; best {best}")
    return best


def retune(probe: FusionProbe, names: Sequence[str]) -> None:
    task = probe.task("validation")
    result = tune_weights(
        {n: probe.scores["validation"][n] for n in names},
        task.targets,
        None,
        search=probe.fusion.search,
        normalisation="zscore",
        columns=task.columns,
        start=probe.fusion.weights,
    )
    kept = {n: w for n, w in result.weights.items() if w > 0}
    print(f"  validation {result.val_metric:.4f}; test {value(probe, 'test', result.weights):.4f}; weights {kept}")


def softmax_weights(probe: FusionProbe, names: Sequence[str], l2: float) -> dict[str, float]:
    task = probe.task("validation")
    assert task.columns is not None
    lists, positions = task.columns, task.targets
    features = np.stack([np.take_along_axis(zscored(probe.scores["validation"][n], n), lists, 1) for n in names], -1)
    rows = np.arange(len(lists))

    def loss(w: np.ndarray) -> float:
        s = features @ w
        s = s - s.max(axis=1, keepdims=True)
        return float(-(s[rows, positions] - np.log(np.exp(s).sum(axis=1))).mean() + l2 * (w**2).sum())

    fitted = minimize(loss, np.ones(len(names)), method="L-BFGS-B").x
    return dict(zip(names, (float(v) for v in fitted), strict=True))


def deeper_split(exp: Experiment, depth: int) -> Split:
    """Each user's ``depth``-th-to-last event as target (the later ones never seen), training data without them.
    ``holdout`` is a label only here: depth 2 is the validation split, deeper ones go further back."""
    interactions = exp.interactions
    cases = []
    for user, positions in enumerate(interactions.event_order_by_user()):
        if len(positions) <= depth:
            continue
        events = np.asarray(positions[:-depth], dtype=np.int64)
        cases.append(
            UserCase(
                user=user,
                user_id=interactions.user_ids[user],
                history=np.asarray(interactions.item_index[events], dtype=np.int64),
                events=events,
                target=int(interactions.item_index[positions[-depth]]),
            )
        )
    train = TrainData.from_interactions(interactions, holdout=depth, n_items=exp.n_items)
    return Split("validation", cases, train)


def pooled_validation(probe: FusionProbe, names: Sequence[str], deepest: int) -> None:
    """Tune on the 2nd- to ``deepest``-th-to-last events pooled; each depth has its own training data and lists."""
    exp = probe.exp
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    targets: list[np.ndarray] = []
    for depth in range(2, deepest + 1):
        split = deeper_split(exp, depth)
        scores = exp.scores_on({n: probe.fusion.signals[n] for n in names}, split)
        task = ranking_task(split, exp.n_items, "sampled", n=20, seed=100 + depth)
        assert task.columns is not None
        for n in names:
            parts[n].append(np.take_along_axis(zscored(scores[n], n), task.columns, 1))
        targets.append(task.targets)
        pooled = {n: np.concatenate(v) for n, v in parts.items()}
        result = tune_weights(pooled, np.concatenate(targets), None, search=probe.fusion.search, normalisation="none")
        kept = {n: w for n, w in result.weights.items() if w > 0}
        print(
            f"  events 2..{depth} from the end ({len(pooled[names[0]])} targets): validation {result.val_metric:.4f};"
            f" test {value(probe, 'test', result.weights):.4f}; weights {kept}"
        )


def breakdown(probe: FusionProbe) -> None:
    committed = probe.fusion.weights
    for name, holdout in (("val", "validation"), ("test", "test")):
        split = probe.exp.splits[holdout]
        ndcg = per_user(probe.task(split.holdout).ranks(probe.fused(split.holdout, committed)))
        counts = np.asarray(split.train.incidence().sum(axis=0)).ravel()[split.targets]
        lengths = np.array([len(case.history) for case in split.cases])
        print(f"  {name}: NDCG@10 {ndcg.mean():.4f}; median training count of the target {np.median(counts):.0f}")
        for label, values, edges in (
            ("target count", counts, (0, 20, 50, 100, 200)),
            ("history", lengths, (0, 30, 60, 150)),
        ):
            bins = np.digitize(values, edges[1:])
            cells = [
                f"{edges[b]}+: {ndcg[bins == b].mean():.3f} (n={int((bins == b).sum())})" for b in range(len(edges))
            ]
            print(f"    by {label}: " + ", ".join(cells))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    probe = FusionProbe(Experiment(DATA, seed=0), FusionConfig.load(FUSION), "sampled")
    base = list(probe.fusion.signals)
    committed = probe.fusion.weights
    print(
        f"committed fusion: validation {value(probe, 'val', committed):.4f}; test {value(probe, 'test', committed):.4f}"
    )
    print("1. other signal families, each alone on validation (NDCG@10):")
    ratings = Ratings(probe)
    chosen = [
        best_variant(
            probe,
            "EASE",
            {
                f"ease λ={lam} recent={r}": (lambda s, lam=lam, r=r, d=d: ease(s, lam, r, d))
                for lam in (200, 500)
                for r, d in ((None, 1.0), (20, 0.9))
            },
        ),
        best_variant(
            probe,
            "RP3beta",
            {
                f"rp3 β={b} recent={r}": (lambda s, b=b, r=r, d=d: rp3beta(s, b, r, d))
                for b in (0.3, 0.5, 0.7)
                for r, d in ((None, 1.0), (5, 0.7), (10, 0.8))
            },
        ),
        best_variant(
            probe,
            "session-kNN",
            {
                f"sknn k={k} recent={r}": (lambda s, k=k, r=r, d=d: session_knn(s, k, r, d))
                for k in (20, 50, 100)
                for r, d in ((10, 0.8), (20, 0.9))
            },
        ),
        best_variant(
            probe,
            "mean rating",
            {f"mean rating prior={m}": (lambda s, m=m: ratings.mean_rating(s, m)) for m in (5.0, 20.0)},
        ),
        best_variant(probe, "liked", {"ratings >= 4": ratings.liked}),
        best_variant(
            probe,
            "recent popularity",
            {f"last {w} d": (lambda s, w=w: recent_popularity(s, w * DAY)) for w in (1, 7, 30)},
        ),
    ]
    print(f"  (committed: sequential {probe.solo('sequential'):.4f}, popularity {probe.solo('popularity'):.4f})")

    print("2. each added to the committed fusion, re-tuned from the committed weights:")
    retune(probe, base)
    for name in chosen:
        print(f" + {name}")
        retune(probe, [*base, name])
    print(" + all of them")
    retune(probe, [*base, *chosen])

    print("3. continuous weights fitted by a listwise softmax loss on validation (z-scored committed signals):")
    for l2 in (0.0, 0.01):
        weights = softmax_weights(probe, base, l2)
        shown = {n: round(w, 2) for n, w in weights.items()}
        print(
            f"  l2={l2}: validation {value(probe, 'val', weights):.4f};"
            f" test {value(probe, 'test', weights):.4f}; weights {shown}"
        )

    print("4. the weight search on a pooled validation set (earlier events, their own training data):")
    pooled_validation(probe, base, deepest=6)

    print("5. the committed fusion by target popularity and history length:")
    breakdown(probe)


if __name__ == "__main__":
    main()
