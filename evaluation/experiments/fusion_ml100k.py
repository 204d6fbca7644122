"""Multi-signal fusion on ML-100K: every choice on the validation split, the test split read once at the end.

Protocol: leave-one-out by time over all users; each user's last event is the test target, the second-to-last the
validation target. Signals are fitted on events with the targets removed (validation: last two per user dropped;
test: last one dropped). The user's history is excluded from the ranking. Splits, candidate lists, ranks (tie-safe
scores, ties to the earlier item) and metrics are zsgen's own (``zsgen.evaluate.experiment``), so the numbers are
those ``zsgen evaluate`` reports: the sampled protocol's test lists are ``evaluation/configs/llmrank-all.toml``'s
(seed 0) and its validation lists the ones that run tunes on.

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
from zsgen.evaluate.experiment import Experiment, mean_metric, per_user, summarise
from zsgen.evaluate.protocol import Protocol
from zsgen.evaluate.tuning import tune_on_validation, tune_weights
from zsgen.metrics.metrics import bootstrap_indices, paired_difference
from zsgen.metrics.split import IndexArray
from zsgen.score import UserQuery
from zsgen.score.base import ScoreMatrix
from zsgen.score.config import FusionConfig, SearchSpace, SignalConfig
from zsgen.score.fusion import FusedScorer, combine

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


def fmt(cell: Mapping[str, float]) -> str:
    return f"{cell['mean']:.4f} [{cell['low']:.4f}, {cell['high']:.4f}]"


# -- the pipeline ---------------------------------------------------------------------------------------------------
def choose_variants(exp: Experiment, protocol: Protocol) -> tuple[dict[str, SignalConfig], list[dict[str, Any]]]:
    """The best variant of each family on validation NDCG@10 under ``protocol``."""
    chosen: dict[str, SignalConfig] = {}
    table = []
    for family, variants in FAMILIES.items():
        best = (-1.0, variants[0])
        for variant in variants:
            scores = exp.signal_scores({family: variant}, "validation")[family]
            value = mean_metric(exp.task("validation", protocol).ranks(scores))
            table.append({"family": family, "params": variant.params.given(), "val_ndcg10": value})
            if value > best[0]:
                best = (value, variant)
        chosen[family] = best[1]
        log(f"{protocol} {family}: chose {best[1].params.given()} (validation NDCG@10 {best[0]:.4f})")
    return chosen, table


def tune(
    signals: Mapping[str, SignalConfig], exp: Experiment, *, normalisation: str, method: str, protocol: Protocol
) -> tuple[FusionConfig, float]:
    """Weights on validation by zsgen's own search, on the lists ``zsgen evaluate`` tunes on (same seed)."""
    config = FusionConfig(
        signals=dict(signals),
        normalisation=normalisation,
        method=method,
        search=SEARCH,
    )
    tuned, result = tune_on_validation(
        config,
        exp.catalog,
        exp.interactions,
        protocol=protocol,
        n_candidates=exp.n_candidates,
        seed=exp.seed,
        item_vectors=exp.vectors,
        source="ml-100k",
    )
    return tuned, result.val_metric


def run_protocol(exp: Experiment, protocol: Protocol, boot: np.ndarray) -> tuple[dict[str, Any], FusionConfig]:
    """Variants, normalisation and weights on validation; then singles, leave-one-out and fused on test."""
    signals, variant_table = choose_variants(exp, protocol)
    test_task = exp.task("test", protocol)
    tuned_by_norm = {}
    for normalisation, method in NORMALISATIONS:
        tuned, value = tune(signals, exp, normalisation=normalisation, method=method, protocol=protocol)
        tuned_by_norm[f"{method}/{normalisation}"] = (tuned, value)
        log(f"{protocol} {method}/{normalisation}: validation NDCG@10 {value:.4f}, weights {tuned.weights}")
    best_key = max(tuned_by_norm, key=lambda k: tuned_by_norm[k][1])
    config = tuned_by_norm[best_key][0]

    scores = exp.signal_scores(signals, "test")
    fused_ranks = test_task.ranks(fused_from(config, scores))
    left_out: dict[str, dict[str, Any]] = {}
    for name in signals:
        rest = {k: v for k, v in signals.items() if k != name}
        cfg, value = tune(rest, exp, normalisation=config.normalisation, method=config.method, protocol=protocol)
        ranks = test_task.ranks(fused_from(cfg, scores))
        left_out[name] = {
            "val_ndcg10": value,
            "weights": cfg.weights,
            "test": summarise(ranks, boot),
            "paired_ndcg10_vs_fused": paired_difference(per_user(ranks), per_user(fused_ranks), boot).model_dump(),
        }
        log(f"{protocol} without {name}: test NDCG@10 {left_out[name]['test']['NDCG@10']['mean']:.4f}")
    result = {
        "variants": variant_table,
        "chosen_signals": {k: v.model_dump() for k, v in signals.items()},
        "chosen_fusion": best_key,
        "weights": config.weights,
        "val_ndcg10": tuned_by_norm[best_key][1],
        "normalisations": {
            key: {"val_ndcg10": value, "test": summarise(test_task.ranks(fused_from(cfg, scores)), boot)}
            for key, (cfg, value) in tuned_by_norm.items()
        },
        "singles": {name: summarise(test_task.ranks(s), boot) for name, s in scores.items()},
        "left_out": left_out,
        "fused": summarise(fused_ranks, boot),
    }
    return result, config


def fused_from(config: FusionConfig, scores: Mapping[str, ScoreMatrix]) -> ScoreMatrix:
    return combine({k: v for k, v in scores.items() if config.weight(k) > 0}, config)


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


def llm_stage(config: FusionConfig, exp: Experiment, users: np.ndarray, boot_seed: int, cache: Path) -> dict[str, Any]:
    """Tune the LLM weight on validation (others fixed) for a user sample, then compare on test for that sample."""
    catalog = exp.catalog
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
    val_task = exp.task("validation", "full_catalog").subset(np.searchsorted(exp.val.users, users))
    fused = FusedScorer(tuned_config, item_vectors=exp.vectors, llm=fn, signals=list(with_llm.signals))
    fused.fit(catalog, exp.val.train)
    val_scores = fused.score_signals(val_task.split.queries)
    result = tune_weights(
        val_scores,
        val_task.targets,
        val_task.exclude,
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
    test_task = exp.task("test", "full_catalog").subset(np.searchsorted(exp.test.users, users))
    fused_test = FusedScorer(tuned_config, item_vectors=exp.vectors, llm=fn, signals=list(with_llm.signals))
    fused_test.fit(catalog, exp.test.train)
    test_scores = fused_test.score_signals(test_task.split.queries)
    fn.flush()  # type: ignore[attr-defined]
    final = {**fixed_weights, "llm": llm_weight}
    probe = {**fixed_weights, "llm": 1.0}  # the LLM at the weight of an ordinary signal, whatever was chosen

    def ranks_for(weights: Mapping[str, float]) -> IndexArray:
        scores = combine(
            {k: v for k, v in test_scores.items() if weights.get(k, 0) > 0}, with_llm.with_weights(weights)
        )
        return test_task.ranks(scores)

    boot = bootstrap_indices(len(users), resamples=1000, seed=boot_seed)
    base_ranks, chosen_ranks, probe_ranks = ranks_for(fixed_weights), ranks_for(final), ranks_for(probe)
    llm_alone = test_task.ranks(test_scores["llm"])
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
            per_user(chosen_ranks), per_user(base_ranks), boot
        ).model_dump(),
        "paired_ndcg10_weight1_minus_without": paired_difference(
            per_user(probe_ranks), per_user(base_ranks), boot
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

    exp = Experiment(args.data, seed=args.seed)
    n_users = len(exp.test.cases)
    boot = bootstrap_indices(n_users, resamples=1000, seed=args.seed)
    log(f"{n_users} users, {exp.n_items} items, {len(exp.interactions)} events")

    full, config = run_protocol(exp, "full_catalog", boot)
    sampled, sampled_cfg = run_protocol(exp, "sampled", boot)

    # candidate recall at N for each generator (test, history excluded), with the full-catalog variants
    test_scores = exp.signal_scores(config.signals, "test")
    generators = {**test_scores, "fused": fused_from(config, test_scores)}
    full_task = exp.task("test", "full_catalog")
    recall = {
        name: {str(n): mean_metric(full_task.ranks(scores), f"hr@{n}") for n in (10, 20, 50, 100)}
        for name, scores in generators.items()
    }

    llm = None
    if args.llm:
        rng = np.random.default_rng(args.seed)
        users = np.sort(rng.choice(n_users, size=min(args.llm_users, n_users), replace=False))
        cache = args.out / "fusion_ml100k_llm_cache.json"
        llm = llm_stage(config, exp, exp.test.users[users], args.seed, cache)

    results = {
        "dataset": str(args.data.name),
        "users": n_users,
        "items": exp.n_items,
        "protocol": "leave-one-out by time; history excluded; tie-safe scores, ties to the earlier item (the rule of "
        "zsgen evaluate); 1000 bootstrap resamples",
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
