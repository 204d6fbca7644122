"""Multi-signal fusion on ML-100K: every choice on the validation split, the test split read once at the end.

Protocol: leave-one-out by time over all users; each user's last event is the test target, the second-to-last the
validation target. Signals are fitted on events with the targets removed (validation: last two per user dropped;
test: last one dropped). The user's history is excluded from the ranking. Ties in scores go to the lower catalog
index (the rule of ``zsgen.score.top_k``).

Steps, each chosen on validation only:
1. each signal family's variant (text user vector, co-occurrence window/decay, neighbourhood size, popularity window);
2. the normalisation (rank / zscore / minmax / RRF);
3. the weights (bounded search, ``SearchSpace`` below);
then test: HR@10 / NDCG@10 with 95% bootstrap intervals over users, for each signal alone, each signal left out
(weights re-tuned on validation without it), and the fused system; the LLMRank-style protocol (target + 19 random
unseen items, seeded per user, weights tuned on the same protocol on validation); candidate recall at N for each
generator; optionally the packaged SmolLM2 as one more signal (``--llm``), on a seeded user sample.

Run:  HF_HUB_OFFLINE=1 python evaluation/experiments/fusion_ml100k.py [--llm --llm-users 100]
Writes evaluation/results/fusion_ml100k.{md,json} and the tuned configs fusion_ml100k_{full,sampled}.toml.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.catalog import Catalog
from zsgen.evaluate.metrics import bootstrap_indices, bootstrap_interval, paired_difference, rank_metrics
from zsgen.interactions import Interactions
from zsgen.loaders import load_dataset
from zsgen.score import TrainData, UserQuery
from zsgen.score.base import IndexArray, ScoreMatrix
from zsgen.score.config import FusionConfig, SearchSpace, SignalConfig
from zsgen.score.fusion import FusedScorer, build_signal, combine
from zsgen.score.tuning import (
    history_mask,
    sample_candidates,
    target_ranks,
    tune_on_validation,
    validation_split,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
RESULTS = ROOT / "evaluation" / "results"
KS = (1, 5, 10, 20)

#: Variants per signal family; the best of each on validation NDCG@10 (full catalog) enters the fusion.
FAMILIES: dict[str, list[SignalConfig]] = {
    "text": [
        SignalConfig(kind="text", params={"user_vector": s, "history_length": n})
        for s in ("mean", "recency", "last", "maxsim")
        for n in (5, 10)
        if not (s == "last" and n == 10)
    ],
    "popularity": [
        SignalConfig(kind="popularity"),
        SignalConfig(kind="popularity", params={"window": 30 * 86400.0, "blend": 0.5}),
        SignalConfig(kind="popularity", params={"window": 7 * 86400.0, "blend": 0.5}),
    ],
    "sequential": [
        SignalConfig(
            kind="cooccurrence",
            params={"window": w, "recent": r, "decay": d, "position_decay": 0.9, "user_weight": g},
        )
        for w in (10, 20)
        for r, d in ((10, 0.7), (15, 0.8))
        for g in (0.0, 0.5)
    ],
    "cooccurrence": [
        SignalConfig(kind="cooccurrence", params={"recent": r, "decay": d, "user_weight": g})
        for r, d in ((5, 0.6), (10, 0.7))
        for g in (0.0, 0.5, 1.0)
    ],
    "user_filtering": [SignalConfig(kind="user_filtering", params={"neighbours": k}) for k in (12, 50)],
    "item_filtering": [
        SignalConfig(kind="item_filtering", params={"neighbours": 12}),
        SignalConfig(kind="item_filtering", params={"neighbours": 12, "recent": 8}),
    ],
}

SEARCH = SearchSpace(default_values=[0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0], samples=60, seed=0, max_trials=400, rounds=3)
NORMALISATIONS = [("zscore", "weighted"), ("rank", "weighted"), ("minmax", "weighted"), ("rank", "rrf")]


def log(message: str) -> None:
    logging.getLogger("fusion_ml100k").info(message)


# -- evaluation helpers ---------------------------------------------------------------------------------------------
class Split:
    """Queries, targets, training data and history mask of one split (``holdout`` 1 = test, 2 = validation)."""

    def __init__(self, interactions: Interactions, n_items: int, holdout: int) -> None:
        if holdout == 2:
            split = validation_split(interactions, n_items=n_items)
            self.train, self.queries, self.targets = split.train, split.queries, split.targets
        else:
            self.train = TrainData.from_interactions(interactions, holdout=1, n_items=n_items)
            sequences = interactions.item_sequences()
            self.queries = [UserQuery(history=s[:-1], user=u) for u, s in enumerate(sequences)]
            self.targets = np.array([int(s[-1]) for s in sequences], dtype=np.int64)
        self.mask = history_mask(self.queries, n_items)
        self.n_items = n_items

    def ranks(self, scores: ScoreMatrix) -> IndexArray:
        return target_ranks(scores, self.targets, self.mask)

    def sampled_ranks(self, scores: ScoreMatrix, lists: IndexArray, positions: IndexArray) -> IndexArray:
        return target_ranks(np.take_along_axis(scores, lists, axis=1), positions, None)


def summarise(ranks: IndexArray, boot: np.ndarray) -> dict[str, Any]:
    values = rank_metrics([int(r) for r in ranks], KS)
    return {name: bootstrap_interval(v, boot).model_dump() for name, v in values.items()}


def per_user(ranks: IndexArray, metric: str) -> np.ndarray:
    return rank_metrics([int(r) for r in ranks], KS)[metric]


def fmt(cell: Mapping[str, float]) -> str:
    return f"{cell['mean']:.4f} [{cell['low']:.4f}, {cell['high']:.4f}]"


def ndcg10(ranks: IndexArray) -> float:
    return float(per_user(ranks, "NDCG@10").mean())


# -- the pipeline ---------------------------------------------------------------------------------------------------
def signal_scores(
    signals: Mapping[str, SignalConfig], catalog: Catalog, split: Split, vectors: np.ndarray
) -> dict[str, ScoreMatrix]:
    out = {}
    for name, signal in signals.items():
        scorer = build_signal(name, signal, item_vectors=vectors).fit(catalog, split.train)
        out[name] = scorer.score(split.queries)
    return out


class Protocol:
    """How a split is ranked: ``full_catalog`` (every unseen item) or ``sampled`` (target + 19 random unseen items,
    seeded per user; the validation lists use ``seed + 1``, exactly as :func:`tune_on_validation` draws them)."""

    def __init__(self, name: str, val: Split, test: Split, seed: int) -> None:
        self.name, self.val, self.test, self.seed = name, val, test, seed
        if name == "sampled":
            self.val_lists = sample_candidates(val.queries, val.targets, val.n_items, 20, seed=seed + 1)
            self.test_lists = sample_candidates(test.queries, test.targets, test.n_items, 20, seed=seed)

    def val_ranks(self, scores: ScoreMatrix) -> IndexArray:
        if self.name == "sampled":
            return self.val.sampled_ranks(scores, *self.val_lists)
        return self.val.ranks(scores)

    def test_ranks(self, scores: ScoreMatrix) -> IndexArray:
        if self.name == "sampled":
            return self.test.sampled_ranks(scores, *self.test_lists)
        return self.test.ranks(scores)


def choose_variants(
    catalog: Catalog, protocol: Protocol, vectors: np.ndarray
) -> tuple[dict[str, SignalConfig], list[dict[str, Any]]]:
    """The best variant of each family on validation NDCG@10 under ``protocol``."""
    chosen: dict[str, SignalConfig] = {}
    table = []
    for family, variants in FAMILIES.items():
        best = (-1.0, variants[0])
        for variant in variants:
            scores = signal_scores({family: variant}, catalog, protocol.val, vectors)[family]
            value = ndcg10(protocol.val_ranks(scores))
            table.append({"family": family, "params": variant.params, "val_ndcg10": value})
            if value > best[0]:
                best = (value, variant)
        chosen[family] = best[1]
        log(f"{protocol.name} {family}: chose {best[1].params} (validation NDCG@10 {best[0]:.4f})")
    return chosen, table


def tune(
    signals: Mapping[str, SignalConfig],
    catalog: Catalog,
    interactions: Interactions,
    vectors: np.ndarray,
    *,
    normalisation: str,
    method: str,
    protocol: str = "full_catalog",
    seed: int = 0,
    **resources: Any,
) -> tuple[FusionConfig, float]:
    config = FusionConfig(
        signals=dict(signals),
        normalisation=normalisation,
        method=method,
        search=SEARCH,
    )
    tuned, result = tune_on_validation(
        config,
        catalog,
        interactions,
        protocol=protocol,  # type: ignore[arg-type]
        seed=seed,
        item_vectors=vectors,
        source="ml-100k",
        **resources,
    )
    return tuned, result.val_metric


class TestScores:
    """Test-split scores of each signal variant, computed once however many protocols use it."""

    def __init__(self, catalog: Catalog, test: Split, vectors: np.ndarray) -> None:
        self.catalog, self.test, self.vectors = catalog, test, vectors
        self._cache: dict[str, ScoreMatrix] = {}

    def of(self, signals: Mapping[str, SignalConfig]) -> dict[str, ScoreMatrix]:
        out = {}
        for name, signal in signals.items():
            key = signal.model_dump_json()
            if key not in self._cache:
                self._cache[key] = signal_scores({name: signal}, self.catalog, self.test, self.vectors)[name]
            out[name] = self._cache[key]
        return out


def run_protocol(
    protocol: Protocol,
    catalog: Catalog,
    interactions: Interactions,
    vectors: np.ndarray,
    test_cache: TestScores,
    boot: np.ndarray,
) -> tuple[dict[str, Any], FusionConfig]:
    """Variants, normalisation and weights on validation; then singles, leave-one-out and fused on test."""
    signals, variant_table = choose_variants(catalog, protocol, vectors)
    tuned_by_norm = {}
    for normalisation, method in NORMALISATIONS:
        tuned, value = tune(
            signals,
            catalog,
            interactions,
            vectors,
            normalisation=normalisation,
            method=method,
            protocol=protocol.name,
            seed=protocol.seed + 1,
        )
        tuned_by_norm[f"{method}/{normalisation}"] = (tuned, value)
        log(f"{protocol.name} {method}/{normalisation}: validation NDCG@10 {value:.4f}, weights {tuned.weights}")
    best_key = max(tuned_by_norm, key=lambda k: tuned_by_norm[k][1])
    config = tuned_by_norm[best_key][0]

    scores = test_cache.of(signals)
    fused_ranks = protocol.test_ranks(fused_from(config, scores))
    left_out: dict[str, dict[str, Any]] = {}
    for name in signals:
        rest = {k: v for k, v in signals.items() if k != name}
        cfg, value = tune(
            rest,
            catalog,
            interactions,
            vectors,
            normalisation=config.normalisation,
            method=config.method,
            protocol=protocol.name,
            seed=protocol.seed + 1,
        )
        ranks = protocol.test_ranks(fused_from(cfg, scores))
        left_out[name] = {
            "val_ndcg10": value,
            "weights": cfg.weights,
            "test": summarise(ranks, boot),
            "paired_ndcg10_vs_fused": paired_difference(
                per_user(ranks, "NDCG@10"), per_user(fused_ranks, "NDCG@10"), boot
            ).model_dump(),
        }
        log(f"{protocol.name} without {name}: test NDCG@10 {left_out[name]['test']['NDCG@10']['mean']:.4f}")
    result = {
        "variants": variant_table,
        "chosen_signals": {k: v.model_dump() for k, v in signals.items()},
        "chosen_fusion": best_key,
        "weights": config.weights,
        "val_ndcg10": tuned_by_norm[best_key][1],
        "normalisations": {
            key: {"val_ndcg10": value, "test": summarise(protocol.test_ranks(fused_from(cfg, scores)), boot)}
            for key, (cfg, value) in tuned_by_norm.items()
        },
        "singles": {name: summarise(protocol.test_ranks(s), boot) for name, s in scores.items()},
        "left_out": left_out,
        "fused": summarise(fused_ranks, boot),
    }
    return result, config


def fused_from(config: FusionConfig, scores: Mapping[str, ScoreMatrix]) -> ScoreMatrix:
    return combine({k: v for k, v in scores.items() if config.weight(k) > 0}, config)


def item_vectors(catalog: Catalog) -> np.ndarray:
    from zsgen.embed import default_encoder
    from zsgen.itemtext import ItemTextTemplate

    encoder = default_encoder()
    return np.asarray(encoder.encode(ItemTextTemplate().render_all(catalog)), dtype=np.float32)


# -- the LLM signal -------------------------------------------------------------------------------------------------
def llm_callable(catalog: Catalog, cache_path: Path, history_length: int) -> Callable[..., np.ndarray]:
    """SmolLM2 verbalizer label log-probabilities for a candidate list, memoised on disk (reruns are free)."""
    from zsgen.rerank import RerankConfig, Reranker
    from zsgen.score.llm import reranker_scores

    reranker = Reranker(
        RerankConfig(
            method="verbalizer", backend="verbalizer", history_length=history_length, shuffle=True, candidates=20
        ),
        catalog=catalog,
    )
    inner = reranker_scores(reranker, catalog, kind="score")
    memo: dict[str, list[float]] = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    def score(query: UserQuery, candidates: IndexArray) -> np.ndarray:
        key = f"{query.user}|{','.join(map(str, query.history[-history_length:]))}|{','.join(map(str, candidates))}"
        if key not in memo:
            memo[key] = [float(x) for x in inner(query, candidates)]
            if len(memo) % 10 == 0:
                cache_path.write_text(json.dumps(memo))
                log(f"LLM: {len(memo)} candidate lists scored")
        return np.array(memo[key])

    score.flush = lambda: cache_path.write_text(json.dumps(memo))  # type: ignore[attr-defined]
    return score


def llm_stage(
    config: FusionConfig,
    catalog: Catalog,
    interactions: Interactions,
    vectors: np.ndarray,
    users: np.ndarray,
    boot_seed: int,
    cache: Path,
) -> dict[str, Any]:
    """Tune the LLM weight on validation (others fixed) for a user sample, then compare on test for that sample."""
    fn = llm_callable(catalog, cache, history_length=5)
    with_llm = config.model_copy(
        update={
            "signals": {**config.signals, "llm": SignalConfig(kind="llm", params={"n_candidates": 20})},
            "search": SearchSpace(values={"llm": [0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0]}, max_trials=50),
        }
    )
    # Other weights stay as tuned on all users; only the LLM weight is searched, on the sampled validation users.
    fixed_weights = {k: config.weight(k) for k in config.signals}
    tuned_config = with_llm.model_copy(update={"weights": fixed_weights})
    split = validation_split(interactions, n_items=len(catalog), users=users)
    fused = FusedScorer(tuned_config, item_vectors=vectors, llm=fn, signals=list(with_llm.signals))
    fused.fit(catalog, split.train)
    val_scores = fused.score_signals(split.queries)
    from zsgen.score.tuning import tune_weights

    result = tune_weights(
        val_scores,
        split.targets,
        history_mask(split.queries, len(catalog)),
        search=with_llm.search,
        normalisation=config.normalisation,
        method=config.method,
        rrf_k=config.rrf_k,
        fixed=fixed_weights,
    )
    llm_weight = result.weights["llm"]
    val_without = (
        next(t.value for t in result.trials if t.weights["llm"] == 0.0)
        if any(t.weights["llm"] == 0.0 for t in result.trials)
        else None
    )
    test = Split(interactions, len(catalog), holdout=1)
    test_queries = [test.queries[int(u)] for u in users]
    test_targets = test.targets[users]
    test_mask = test.mask[users]
    fused_test = FusedScorer(tuned_config, item_vectors=vectors, llm=fn, signals=list(with_llm.signals))
    fused_test.fit(catalog, test.train)
    test_scores = fused_test.score_signals(test_queries)
    fn.flush()  # type: ignore[attr-defined]
    final = {**fixed_weights, "llm": llm_weight}
    probe = {**fixed_weights, "llm": 1.0}  # the LLM at the weight of an ordinary signal, whatever was chosen

    def ranks_for(weights: Mapping[str, float]) -> IndexArray:
        scores = combine(
            {k: v for k, v in test_scores.items() if weights.get(k, 0) > 0}, with_llm.with_weights(weights)
        )
        return target_ranks(scores, test_targets, test_mask)

    boot = bootstrap_indices(len(users), resamples=1000, seed=boot_seed)
    base_ranks, chosen_ranks, probe_ranks = ranks_for(fixed_weights), ranks_for(final), ranks_for(probe)
    llm_alone = target_ranks(test_scores["llm"], test_targets, test_mask)
    out = {
        "users": len(users),
        "llm_weight": llm_weight,
        "val_ndcg10_without": val_without,
        "val_ndcg10_with": result.val_metric,
        "test_without": summarise(base_ranks, boot),
        "test_with_chosen_weight": summarise(chosen_ranks, boot),
        "test_with_weight_1": summarise(probe_ranks, boot),
        "test_llm_alone_on_its_20_candidates": summarise(llm_alone, boot),
        "paired_ndcg10_chosen_minus_without": paired_difference(
            per_user(chosen_ranks, "NDCG@10"), per_user(base_ranks, "NDCG@10"), boot
        ).model_dump(),
        "paired_ndcg10_weight1_minus_without": paired_difference(
            per_user(probe_ranks, "NDCG@10"), per_user(base_ranks, "NDCG@10"), boot
        ).model_dump(),
    }
    return out


# -- main -----------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and sampled-candidate seed")
    parser.add_argument("--llm", action="store_true", help="also measure the packaged SmolLM2 as a signal")
    parser.add_argument("--llm-users", type=int, default=100, help="seeded user sample for the LLM stage")
    parser.add_argument("--render-only", action="store_true", help="rewrite the report from the saved JSON")
    args = parser.parse_args(argv)
    if args.render_only:
        report = render(json.loads((args.out / "fusion_ml100k.json").read_text()))
        (args.out / "fusion_ml100k.md").write_text(report)
        print(report)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()

    dataset = load_dataset(args.data)
    catalog, interactions = dataset.catalog, dataset.interactions
    assert interactions is not None
    n_items = len(catalog)
    vectors = item_vectors(catalog)
    val = Split(interactions, n_items, holdout=2)
    test = Split(interactions, n_items, holdout=1)
    boot = bootstrap_indices(len(test.queries), resamples=1000, seed=args.seed)
    test_cache = TestScores(catalog, test, vectors)
    log(f"{len(test.queries)} users, {n_items} items, {len(interactions)} events")

    full, config = run_protocol(
        Protocol("full_catalog", val, test, args.seed), catalog, interactions, vectors, test_cache, boot
    )
    sampled, sampled_cfg = run_protocol(
        Protocol("sampled", val, test, args.seed), catalog, interactions, vectors, test_cache, boot
    )

    # candidate recall at N for each generator (test, history excluded), with the full-catalog variants
    generators = {**test_cache.of(config.signals), "fused": fused_from(config, test_cache.of(config.signals))}
    recall = {
        name: {str(n): float((test.ranks(scores) < n).mean()) for n in (10, 20, 50, 100)}
        for name, scores in generators.items()
    }

    llm = None
    if args.llm:
        rng = np.random.default_rng(args.seed)
        users = np.sort(rng.choice(len(test.queries), size=min(args.llm_users, len(test.queries)), replace=False))
        cache = args.out / "fusion_ml100k_llm_cache.json"
        llm = llm_stage(config, catalog, interactions, vectors, users, args.seed, cache)

    results = {
        "dataset": str(args.data.name),
        "users": len(test.queries),
        "items": n_items,
        "protocol": "leave-one-out by time; history excluded; ties to the lower item index; 1000 bootstrap resamples",
        "search": SEARCH.model_dump(),
        "full_catalog": full,
        "sampled": sampled,
        "candidate_recall": recall,
        "llm": llm,
        "seconds": time.perf_counter() - started,
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_ml100k.json").write_text(json.dumps(results, indent=2))
    config.save(args.out / "fusion_ml100k_full.toml")
    sampled_cfg.save(args.out / "fusion_ml100k_sampled.toml")
    report = render(results)
    (args.out / "fusion_ml100k.md").write_text(report)
    print(report)


def protocol_section(title: str, p: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    head = "| system | " + " | ".join(columns) + " |"
    lines = [
        f"## {title}",
        "",
        f"Fusion chosen on validation: **{p['chosen_fusion']}**, validation NDCG@10 {p['val_ndcg10']:.4f}.",
        "Weights: " + ", ".join(f"{k} {v:g}" for k, v in p["weights"].items()) + ".",
        "Signal variants: " + "; ".join(f"{k} {json.dumps(v['params'])}" for k, v in p["chosen_signals"].items()) + ".",
        "",
        head,
        "| --- " * (len(columns) + 1) + "|",
    ]

    def row(label: str, cell: Mapping[str, Any], bold: bool = False) -> str:
        values = [fmt(cell[c]) for c in columns]
        if bold:
            values = [f"**{v}**" for v in values]
        return f"| {label} | " + " | ".join(values) + " |"

    lines += [row(f"{name} alone", cell) for name, cell in p["singles"].items()]
    lines += [row(f"fused without {name}", e["test"]) for name, e in p["left_out"].items()]
    lines.append(row("**fused (all signals)**", p["fused"], bold=True))
    lines += [
        "",
        "Leave-one-out rows re-tune the weights on validation without that signal. Paired NDCG@10 change when the",
        "signal is left out (negative: the signal helps; an interval across 0: no measurable contribution):",
        "",
    ]
    lines += [f"- {name}: {fmt(e['paired_ndcg10_vs_fused'])}" for name, e in p["left_out"].items()]
    lines += ["", "Normalisations, each tuned on validation (the best validation value was kept):", ""]
    lines += ["| fusion | val NDCG@10 | test HR@10 | test NDCG@10 |", "| --- | --- | --- | --- |"]
    for key, entry in p["normalisations"].items():
        lines.append(
            f"| {key} | {entry['val_ndcg10']:.4f} | {fmt(entry['test']['HR@10'])} | {fmt(entry['test']['NDCG@10'])} |"
        )
    return [*lines, ""]


def goals(r: Mapping[str, Any]) -> list[str]:
    """The issue's targets next to what was measured (point estimate decides; the interval is shown)."""
    rows = [
        ("full catalog HR@10", r["full_catalog"]["fused"]["HR@10"], 0.20),
        ("full catalog NDCG@10", r["full_catalog"]["fused"]["NDCG@10"], 0.11),
        ("LLMRank-style NDCG@10", r["sampled"]["fused"]["NDCG@10"], 0.75),
    ]
    lines = ["## Goals", "", "| goal | target | measured (test, 943 users) | met |", "| --- | --- | --- | --- |"]
    for label, cell, target in rows:
        lines.append(f"| {label} | >= {target:.2f} | {fmt(cell)} | {'yes' if cell['mean'] >= target else '**no**'} |")
    if r["sampled"]["fused"]["NDCG@10"]["mean"] < 0.75:
        lines += [
            "",
            "The LLMRank-style goal is not met: the interval reaches 0.75, the point estimate does not. Validation",
            "NDCG@10 on that protocol plateaus near 0.775 for every training-free signal tried during development",
            "(besides the variants below: time-gap query weights, session kNN, two-hop item similarity, release-year",
            "and genre kernels, popularity in a window around the user's time, rating-weighted pairs, item",
            "availability masks); none moved it. Test runs below validation on both protocols (NDCG@10 "
            f"{r['full_catalog']['val_ndcg10']:.3f} -> {r['full_catalog']['fused']['NDCG@10']['mean']:.3f} full "
            f"catalog, {r['sampled']['val_ndcg10']:.3f} -> {r['sampled']['fused']['NDCG@10']['mean']:.3f} sampled).",
        ]
    m = r.get("llm")
    if m:
        lines += [
            "",
            f"The packaged SmolLM2 as a signal: weight **{m['llm_weight']:g}** chosen on validation ({m['users']} "
            "sampled users); measured test NDCG@10 change at that weight "
            f"{fmt(m['paired_ndcg10_chosen_minus_without'])}, at weight 1 "
            f"{fmt(m['paired_ndcg10_weight1_minus_without'])} (details at the end).",
        ]
    return [*lines, ""]


def render(r: Mapping[str, Any]) -> str:
    lines = [
        "# Multi-signal fusion on ML-100K",
        "",
        f"{r['users']} users, {r['items']} items; {r['protocol']}.",
        "Signal variants, normalisation and weights were all chosen on the validation split (each user's",
        "second-to-last item as target, signals fitted without the last two events); the test split (last item) was",
        "read once, at the end. Generated by `evaluation/experiments/fusion_ml100k.py`; 95% bootstrap intervals in",
        "brackets.",
        "",
    ]
    lines += goals(r)
    lines += protocol_section("Full catalog (test)", r["full_catalog"], ["HR@10", "NDCG@10", "MRR"])
    lines += protocol_section(
        "LLMRank-style: target + 19 random unseen items, seeded per user (test)",
        r["sampled"],
        ["HR@1", "HR@5", "NDCG@10"],
    )
    lines += ["## Candidate recall at N (test, full catalog, history excluded)", ""]
    lines += ["| generator | @10 | @20 | @50 | @100 |", "| --- | --- | --- | --- | --- |"]
    for name, row in r["candidate_recall"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[n]:.4f}" for n in ("10", "20", "50", "100")) + " |")
    for key, title in (("full_catalog", "full catalog"), ("sampled", "sampled")):
        lines += ["", f"## Signal variants (validation NDCG@10, {title})", ""]
        lines += ["| family | params | val NDCG@10 |", "| --- | --- | --- |"]
        for v in r[key]["variants"]:
            lines.append(f"| {v['family']} | {json.dumps(v['params'])} | {v['val_ndcg10']:.4f} |")
    if r.get("llm"):
        m = r["llm"]
        without = m["val_ndcg10_without"]
        lines += [
            "",
            "## The LLM signal (SmolLM2-135M-Instruct, verbalizer log-probabilities over the fused top 20)",
            "",
            f"Seeded sample of {m['users']} users. Weight chosen on validation: **{m['llm_weight']:g}** "
            f"(validation NDCG@10 without the LLM {without if without is None else f'{without:.4f}'}, "
            f"with it {m['val_ndcg10_with']:.4f}).",
            "",
            "| test (same users) | HR@10 | NDCG@10 |",
            "| --- | --- | --- |",
            f"| fused without LLM | {fmt(m['test_without']['HR@10'])} | {fmt(m['test_without']['NDCG@10'])} |",
            f"| fused with LLM at chosen weight | {fmt(m['test_with_chosen_weight']['HR@10'])} | "
            f"{fmt(m['test_with_chosen_weight']['NDCG@10'])} |",
            f"| fused with LLM at weight 1 | {fmt(m['test_with_weight_1']['HR@10'])} | "
            f"{fmt(m['test_with_weight_1']['NDCG@10'])} |",
            f"| LLM alone (its 20 candidates) | {fmt(m['test_llm_alone_on_its_20_candidates']['HR@10'])} | "
            f"{fmt(m['test_llm_alone_on_its_20_candidates']['NDCG@10'])} |",
            "",
            f"Paired NDCG@10 change from adding the LLM at the chosen weight: "
            f"{fmt(m['paired_ndcg10_chosen_minus_without'])}; at weight 1: "
            f"{fmt(m['paired_ndcg10_weight1_minus_without'])}.",
        ]
    lines += ["", f"Run time {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
