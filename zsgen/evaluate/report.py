"""``report.md`` and its plots, written from a :class:`Summary` alone (so a report can be rebuilt from summary data).

Plots use matplotlib's Agg backend: evaluation runs on servers and in CI, where there is no display. matplotlib is
the ``eval`` extra, not a core dependency: without it the report is written all the same, without its plots, and one
warning says so. A whole evaluation must never be lost at its last step to a missing plotting library.
"""

from __future__ import annotations

import logging
import math
from importlib.util import find_spec
from pathlib import Path

from zsgen.evaluate.summary import RankerSummary, Summary
from zsgen.metrics.metrics import Interval

METRICS_PLOT = "metrics.png"
POSITION_PLOT = "position.png"
REPORT_NAME = "report.md"

log = logging.getLogger(__name__)

#: How the report describes the split of a protocol that is not leave-one-out.
SPLIT_TEXT = {
    "cold_items": "cold items (held-out items removed from everything fitted; targets: each user's interactions "
    "with them; candidates: every cold item)",
    "cold_users": "cold users (held-out users removed from everything fitted; history: their first n events; "
    "targets: the events after them)",
}


def _num(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _cell(interval: Interval) -> str:
    if math.isnan(interval.mean):
        return "–"
    if interval.low == interval.high == interval.mean:
        return _num(interval.mean)
    return f"{_num(interval.mean)} ({_num(interval.low)}–{_num(interval.high)})"


def _diff_cell(interval: Interval) -> str:
    if math.isnan(interval.mean):
        return "–"
    mark = " *" if interval.low > 0 or interval.high < 0 else ""
    return f"{interval.mean:+.3f} ({interval.low:+.3f} to {interval.high:+.3f}){mark}"


def _metric_table(rankers: list[RankerSummary], which: str, columns: list[str]) -> list[str]:
    lines = ["| ranker | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for ranker in rankers:
        values = getattr(ranker, which)
        lines.append(f"| {ranker.name} | " + " | ".join(_cell(values[c]) for c in columns) + " |")
    return lines


def render_markdown(summary: Summary, *, plots: bool = True) -> str:
    """The report text; numbers are means with 95% bootstrap intervals over users.

    ``plots=False`` (matplotlib missing) says so where the plots would be, instead of linking images never drawn.
    """
    k = summary.headline_k
    hr_cols = [f"HR@{x}" for x in summary.ks]
    ndcg_cols = [f"NDCG@{x}" for x in summary.ks] + ["MRR"]
    set_cols = [f"{kind}@{x}" for kind in ("Precision", "Recall", "F1") for x in summary.ks]
    has_llm = any(r.llm is not None for r in summary.rankers)
    out: list[str] = [f"# {summary.name}", ""]
    if summary.description:
        out += [summary.description.strip(), ""]
    out += [
        f"- dataset: `{summary.dataset}`"
        + (f" (sha256 `{summary.dataset_sha256[:16]}`)" if summary.dataset_sha256 else "")
        + f"; {summary.split} split: {SPLIT_TEXT.get(summary.protocol, 'leave-one-out by time')}",
        f"- protocol: {summary.protocol}; candidates: {summary.generator} (mean list length "
        f"{summary.mean_candidates:.1f})"
        + (f"; LLM prompts see the last {summary.history_length} items" if has_llm else ""),
        f"- users: {summary.users}; seed {summary.seed}; {summary.bootstrap} bootstrap resamples"
        + (f"; {summary.mean_targets:.1f} targets per user on average" if summary.mean_targets != 1.0 else ""),
        f"- candidate recall (target among the candidates): {_num(summary.candidate_recall)} "
        f"({summary.users_with_target} of {summary.users} users)",
        "",
        "## All users",
        "",
        "A target the generator did not list counts as a miss. Means with 95% bootstrap intervals.",
        "",
        *_metric_table(summary.rankers, "all_users", ndcg_cols),
        "",
        *_metric_table(summary.rankers, "all_users", hr_cols),
        "",
        *_metric_table(summary.rankers, "all_users", set_cols),
        "",
        f"## Users whose target is among the candidates ({summary.users_with_target})",
        "",
        *_metric_table(summary.rankers, "target_in_candidates", ndcg_cols),
        "",
        *_metric_table(summary.rankers, "target_in_candidates", hr_cols),
        "",
    ]
    if summary.generator_recall:
        ns = list(next(iter(summary.generator_recall.values())))
        out += [
            "## Candidate recall at N",
            "",
            "Share of users whose target is among a generator's top N unseen items: the most any reranker of such a "
            f"list can reach. This run shows {summary.mean_candidates:.0f} candidates per user.",
            "",
            "| generator | " + " | ".join(f"N={n}" for n in ns) + " |",
            "|---|" + "---|" * len(ns),
        ]
        for name, recall in summary.generator_recall.items():
            out.append(f"| {name} | " + " | ".join(_num(recall[n]) for n in ns) + " |")
        out.append("")
    if summary.baseline is not None:
        cols = [f"HR@{k}", f"NDCG@{k}", f"Recall@{k}", "MRR"]
        out += [
            f"## Paired comparison against `{summary.baseline}`",
            "",
            "Difference of means over the same users and candidates (all users), with a paired bootstrap interval; "
            "`*` marks intervals that exclude 0.",
            "",
            "| ranker | " + " | ".join(f"Δ{c}" for c in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for ranker in summary.rankers:
            if ranker.vs_baseline is not None:
                out.append(f"| {ranker.name} | " + " | ".join(_diff_cell(ranker.vs_baseline[c]) for c in cols) + " |")
        out.append("")
    llm = [r for r in summary.rankers if r.llm is not None]
    if llm:
        out += [
            "## LLM rankers",
            "",
            "| ranker | fallback rate | repair rate | prompt tokens | completion tokens | calls "
            "| latency mean / p95 (s) | cost |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for ranker in llm:
            s = ranker.llm
            assert s is not None
            out.append(
                f"| {ranker.name} | {s.fallback_rate:.3f} | {s.repair_rate:.3f} | {s.prompt_tokens:,} | "
                f"{s.completion_tokens:,} | {s.calls:,} | {s.latency_mean_s:.2f} / {s.latency_p95_s:.2f} | "
                f"${s.cost:.4f} |"
            )
        reasons = [f"{r.name}: {r.llm.fallback_reasons}" for r in llm if r.llm is not None and r.llm.fallback_reasons]
        if reasons:
            out += ["", "Fallback reasons: " + "; ".join(reasons)]
        out.append("")
    if summary.rankers and summary.rankers[0].by_position:
        buckets = summary.rankers[0].by_position
        out += [
            f"## NDCG@{k} by the position of the target in the shown list",
            "",
            "Position in the list as the generator produced it (and as LLM rankers were shown it); users whose "
            "target was not listed are left out.",
            "",
            "| position | users | " + " | ".join(r.name for r in summary.rankers) + " |",
            "|---|---|" + "---|" * len(summary.rankers),
        ]
        for i, bucket in enumerate(buckets):
            label = str(bucket.first) if bucket.first == bucket.last else f"{bucket.first}–{bucket.last}"
            values = " | ".join(_num(r.by_position[i].ndcg) for r in summary.rankers)
            out.append(f"| {label} | {bucket.users} | {values} |")
        out.append("")
    if plots:
        out += ["## Plots", "", f"![metrics by ranker]({METRICS_PLOT})", "", f"![by target position]({POSITION_PLOT})"]
    else:
        out += ["## Plots", "", "Not drawn: matplotlib is not installed (`pip install 'zsgen[eval]'`)."]
    out.append("")
    return "\n".join(out)


def plot_metrics(summary: Summary, path: Path) -> None:
    """Headline HR and NDCG per ranker with their intervals, over all users and over users with the target listed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = summary.headline_k
    names = [r.name for r in summary.rankers]
    panels = [("all_users", "all users"), ("target_in_candidates", "target among candidates")]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.4 * len(names) + 3), 4.2), sharey=False)
    width = 0.38
    for ax, (which, title) in zip(axes, panels, strict=True):
        for offset, metric in ((-width / 2, f"HR@{k}"), (width / 2, f"NDCG@{k}")):
            values = [getattr(r, which)[metric] for r in summary.rankers]
            means = [0.0 if math.isnan(v.mean) else v.mean for v in values]
            low = [0.0 if math.isnan(v.mean) else v.mean - v.low for v in values]
            high = [0.0 if math.isnan(v.mean) else v.high - v.mean for v in values]
            xs = [i + offset for i in range(len(names))]
            ax.bar(xs, means, width, yerr=[low, high], capsize=3, label=metric)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{summary.name} ({summary.users} users, 95% bootstrap intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_positions(summary: Summary, path: Path) -> None:
    """Headline NDCG by the target's position in the shown list (LLMRank's position-bias view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = summary.headline_k
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for ranker in summary.rankers:
        xs = [(b.first + b.last) / 2 for b in ranker.by_position if b.users]
        ys = [b.ndcg for b in ranker.by_position if b.users]
        ax.plot(xs, ys, marker="o", markersize=3, label=ranker.name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position of the target in the shown list (1 = first)")
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title(f"{summary.name}: NDCG@{k} by target position")
    ax.grid(alpha=0.3)
    if summary.rankers:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(summary: Summary, out_dir: Path) -> Path:
    """Write ``report.md`` and both plots into ``out_dir``; returns the report's path.

    Without matplotlib the plots are skipped with one warning and the report says so (see the module docstring).
    """
    plots = has_matplotlib()
    if plots:
        plot_metrics(summary, out_dir / METRICS_PLOT)
        plot_positions(summary, out_dir / POSITION_PLOT)
    else:
        log.warning("matplotlib is not installed (pip install 'zsgen[eval]'): %s written without plots", REPORT_NAME)
    path = out_dir / REPORT_NAME
    path.write_text(render_markdown(summary, plots=plots), encoding="utf-8")
    return path


def has_matplotlib() -> bool:
    """Whether the plots can be drawn; a module that is present but fails to import counts as missing too."""
    try:
        if find_spec("matplotlib") is None:
            return False
        import matplotlib  # noqa: F401
    except (ImportError, ValueError):  # find_spec raises ValueError for a module set to None in sys.modules
        return False
    return True
