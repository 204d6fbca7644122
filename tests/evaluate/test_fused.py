"""Fused scorers inside ``zsgen evaluate``: tuned on the validation split only, reused by ``zsgen recommend``, and the
candidate recall table the report shows for each generator."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from zsgen.errors import ConfigError
from zsgen.evaluate import evaluate, load_config
from zsgen.metrics.ranks import target_ranks
from zsgen.paths import data_dir

FUSION = """
normalisation = "zscore"

[signals.popularity]
kind = "popularity"

[signals.cooccurrence]
kind = "cooccurrence"

[signals.cooccurrence.params]
recent = 3

[signals.user_filtering]
kind = "user_filtering"

[weights]
popularity = 1.0

[search]
default_values = [0.0, 0.5, 1.0, 2.0]
max_trials = 40
"""

CONFIG = """
name = "fused"
protocol = "custom"
history_length = 3
seed = 1

[dataset]
path = "{catalog}"
interactions = "log.jsonl"

[candidates]
generator = "fused"
fusion = "fusion.toml"
n = 10

[metrics]
bootstrap = 50
recall_at = [1, 5, 10, 40]
recall_generators = ["popularity", "user_filtering"]

[[rankers]]
name = "generator"
kind = "generator"

[[rankers]]
name = "popularity"
kind = "popularity"

[[rankers]]
name = "fused"
kind = "fused"
fusion = "fusion.toml"

[[rankers]]
name = "popularity-as-fusion"
kind = "fused"
fusion = "fusion.toml"
tune = false
"""


def write_log(folder: Path, *, scramble_targets: bool = False) -> None:
    """Users who each watch a run of neighbouring demo items (so co-occurrence carries signal), in time order.
    ``scramble_targets`` replaces every user's last event (the test target) with another item."""
    ids = [json.loads(line)["id"] for line in (data_dir() / "demo_catalog.jsonl").read_text().splitlines() if line]
    rng = np.random.default_rng(7)
    lines = []
    for u in range(40):
        start = int(rng.integers(0, 60))
        picks = [ids[start + int(o)] for o in rng.choice(12, size=7, replace=False)]
        if scramble_targets:
            picks[-1] = ids[200 + u]
        for t, item in enumerate(picks):
            lines.append(json.dumps({"user_id": f"u{u}", "item_id": item, "timestamp": 100 * u + t}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def setup(folder: Path, *, scramble_targets: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_log(folder, scramble_targets=scramble_targets)
    (folder / "fusion.toml").write_text(FUSION, encoding="utf-8")
    config = folder / "fused.toml"
    config.write_text(CONFIG.format(catalog=(data_dir() / "demo_catalog.jsonl").as_posix()), encoding="utf-8")
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fused")
    evaluate(setup(folder), folder / "out", progress=False)
    return folder / "out"


def per_user(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "per_user.jsonl").read_text().splitlines()]


def test_tuned_weights_are_written_and_recorded(run: Path) -> None:
    tuned = tomllib.loads((run / "fusion-fused.toml").read_text())
    assert tuned["tuned"]["split"] == "validation"
    assert set(tuned["weights"]) == {"popularity", "cooccurrence", "user_filtering"}
    resolved = tomllib.loads((run / "config.toml").read_text())["provenance"]["fusion"]
    assert resolved["fused"]["weights"] == tuned["weights"]
    assert resolved["fused"]["tuned_file"] == "fusion-fused.toml"  # beside config.toml, named without a machine path
    assert "tuned_file" not in resolved["popularity-as-fusion"]  # tune = false: the file's weights as they are
    only_popularity = {"popularity": 1.0, "cooccurrence": 0.0, "user_filtering": 0.0}
    assert resolved["popularity-as-fusion"]["weights"] == only_popularity
    assert (run / "fusion-candidates.toml").read_text() == (run / "fusion-fused.toml").read_text()


def test_fusion_with_one_weight_ranks_exactly_as_that_signal(run: Path) -> None:
    for record in per_user(run):
        assert record["rankers"]["popularity-as-fusion"]["top"] == record["rankers"]["popularity"]["top"]


def test_fused_generator_lists_the_fused_rankers_order(run: Path) -> None:
    # The fused generator keeps the top n of the same tuned fusion, best first: the fused ranker cannot reorder it.
    for record in per_user(run):
        assert record["rankers"]["generator"]["top"] == record["rankers"]["fused"]["top"]
        assert record["rankers"]["generator"]["rank"] == record["rankers"]["fused"]["rank"]


def test_recall_table_matches_the_logged_target_positions(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    recall = summary["generator_recall"]
    assert list(recall) == ["fused", "popularity", "user_filtering"]
    positions = [r["target_position"] for r in per_user(run)]
    for n in (1, 5, 10):  # the run showed the fused top 10, so its recall at N <= 10 is read off the log
        expected = np.mean([p is not None and p < n for p in positions])
        assert recall["fused"][str(n)] == pytest.approx(expected)
    assert recall["fused"]["10"] == pytest.approx(summary["candidate_recall"])
    for values in recall.values():
        series = [values[n] for n in ("1", "5", "10", "40")]
        assert series == sorted(series) and series[0] >= 0.0 and series[-1] <= 1.0
    assert "## Candidate recall at N" in (run / "report.md").read_text()


def test_tuning_never_reads_the_test_targets(run: Path, tmp_path: Path) -> None:
    # Same data but every user's last event (the test target) changed: the validation split is identical, so the
    # tuned weights must be too. A tuner that looked at test targets would (almost surely) pick other weights.
    evaluate(setup(tmp_path, scramble_targets=True), tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "fusion-fused.toml").read_text() == (run / "fusion-fused.toml").read_text()
    # ...while the test metrics do change (the test split really differs).
    assert per_user(tmp_path / "out")[0]["target"] != per_user(run)[0]["target"]


def test_recommend_reuses_the_weights_a_run_tuned(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zsgen.cli import main

    folder = run.parent
    catalog = (data_dir() / "demo_catalog.jsonl").as_posix()
    history = [json.loads(line)["item_id"] for line in (folder / "log.jsonl").read_text().splitlines()[:6]]
    argv = ["recommend", "--catalog", catalog, "--interactions", str(folder / "log.jsonl"), "--history", *history]
    assert main([*argv, "--fusion", str(run / "fusion-fused.toml"), "--k", "5", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert len(items) == 5 and not set(history) & {i["id"] for i in items}


VALIDATION_RUN = """
name = "tuned-vs-reported"
protocol = "custom"
split = "validation"
history_length = 3
seed = 5

[dataset]
path = "{catalog}"
interactions = "log.jsonl"

[candidates]
generator = "{generator}"
n = {n}
{candidates_fusion}

[metrics]
bootstrap = 0

[[rankers]]
name = "generator"
kind = "generator"

[[rankers]]
name = "fused"
kind = "fused"
fusion = "fusion.toml"
tune_metric = "{metric}"
"""


@pytest.mark.parametrize(
    ("generator", "n", "metric"),
    [
        ("full_catalog", 12, "ndcg@10"),
        ("random", 12, "ndcg@5"),
        ("random", 12, "hr@1"),
        ("user_filtering", 8, "ndcg@10"),
        ("fused", 6, "ndcg@10"),
    ],
)
def test_the_tuned_value_is_the_value_a_run_reports(tmp_path: Path, generator: str, n: int, metric: str) -> None:
    """Evaluated on the validation split it was tuned on, a fused ranker reports exactly its tuned value: the same
    cases, the same candidate lists (the run's seeded random lists, or its generator's lists on that split), the same
    sums and the same tie rule. Popularity and filtering counts give many exact ties, so a tuner with another tie rule
    or other lists would report another number. A fused generator's tuned value is its own top-n list's (``n`` below
    the metric's cut-off: ranks past the list are misses)."""
    setup(tmp_path)
    config = tmp_path / "validation.toml"
    catalog = (data_dir() / "demo_catalog.jsonl").as_posix()
    extra = f'fusion = "fusion.toml"\ntune_metric = "{metric}"' if generator == "fused" else ""
    text = VALIDATION_RUN.format(catalog=catalog, generator=generator, n=n, metric=metric, candidates_fusion=extra)
    config.write_text(text, encoding="utf-8")
    summary = evaluate(config, tmp_path / "out", progress=False)
    name = metric.upper()
    reported = {r.name: r.all_users[name].mean for r in summary.rankers}
    tuned = tomllib.loads((tmp_path / "out" / "fusion-fused.toml").read_text())["tuned"]
    assert tuned["metric"] == metric
    assert reported["fused"] == tuned["value"]
    if generator == "fused":
        own = tomllib.loads((tmp_path / "out" / "fusion-candidates.toml").read_text())["tuned"]
        assert reported["generator"] == own["value"]
    if generator in ("user_filtering", "fused"):
        assert summary.candidate_recall < 1.0  # some targets are missed by the lists: they count as misses in tuning


def test_results_name_files_without_machine_paths_and_resume_after_a_move(run: Path, tmp_path: Path) -> None:
    """Every file a run records is named relative to its output folder, with the data files' sha256; the resolved
    config re-runs from there; and the resume fingerprint holds contents, not locations, so a moved run resumes."""
    import hashlib
    import shutil

    config = tomllib.loads((run / "config.toml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    tuned = tomllib.loads((run / "fusion-fused.toml").read_text())
    fusion = config["provenance"]["fusion"]
    recorded = [
        config["dataset"]["path"],
        config["dataset"]["interactions"],
        config["candidates"]["fusion"],
        *(r["fusion"] for r in config["rankers"] if "fusion" in r),
        *(f["source"] for f in fusion.values()),
        fusion["fused"]["tuned_file"],
        summary["dataset"],
        tuned["tuned"]["source"],
    ]
    assert not [p for p in recorded if Path(p).is_absolute()]
    assert (run / config["dataset"]["interactions"]).resolve() == (run.parent / "log.jsonl").resolve()
    assert (run / config["dataset"]["path"]).resolve() == (data_dir() / "demo_catalog.jsonl").resolve()
    data = config["provenance"]["dataset"]
    assert data["files"] == {
        "demo_catalog.jsonl": hashlib.sha256((data_dir() / "demo_catalog.jsonl").read_bytes()).hexdigest(),
        "../log.jsonl": hashlib.sha256((run.parent / "log.jsonl").read_bytes()).hexdigest(),
    }
    assert summary["dataset_sha256"] == data["sha256"]
    assert f"- dataset: `{summary['dataset']}` (sha256 `{data['sha256'][:16]}`)" in (run / "report.md").read_text()
    assert load_config(run / "config.toml").fingerprint() == load_config(run.parent / "fused.toml").fingerprint()

    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(run.parent, moved)
    before = (moved / "out" / "per_user.jsonl").read_bytes()
    evaluate(moved / "fused.toml", moved / "out", progress=False)  # resumes: same contents, another place
    assert (moved / "out" / "per_user.jsonl").read_bytes() == before
    moved_config = tomllib.loads((moved / "out" / "config.toml").read_text())
    assert moved_config["provenance"]["fingerprint"] == config["provenance"]["fingerprint"]
    (moved / "log.jsonl").write_text((moved / "log.jsonl").read_text().replace('"timestamp": 1', '"timestamp": 2'))
    with pytest.raises(ConfigError, match="different config"):  # edited data: not the run that folder holds
        evaluate(moved / "fused.toml", moved / "out", progress=False)


def test_target_ranks_match_a_naive_count() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(30, 12)).astype(float)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    targets = rng.integers(0, 12, size=30)
    ranks = target_ranks(scores, targets)
    for row, target in enumerate(targets):
        if not np.isfinite(scores[row, target]):
            assert ranks[row] == -1
            continue
        order = sorted(range(12), key=lambda i: (-scores[row, i], i))
        assert ranks[row] == order.index(target)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('[[rankers]]\nname = "f"\nkind = "fused"\n', "needs `fusion`"),
        ('[[rankers]]\nname = "p"\nkind = "popularity"\nfusion = "x.toml"\n', "rankers.0.fusion: unknown key"),
    ],
)
def test_fusion_settings_are_checked(tmp_path: Path, change: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'name = "c"\nprotocol = "full_catalog"\n[dataset]\npath = "x"\n{change}', encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_a_missing_fusion_file_is_a_clear_error(tmp_path: Path) -> None:
    config = setup(tmp_path)
    (tmp_path / "fusion.toml").unlink()
    with pytest.raises(ConfigError, match=r"fusion\.toml"):
        evaluate(config, tmp_path / "out", progress=False)


def test_a_preparation_handed_the_tuned_fusions_ranks_the_same_without_tuning(run: Path, tmp_path: Path) -> None:
    """The Ray engine's workers prepare the run with the driver's tuned fusions: the same rows, nothing tuned (a
    tuner would be called) and no fusion file written beside their scratch run."""
    from unittest import mock

    from zsgen.evaluate.runner import prepare_run, rank_cases

    config = load_config(run.parent / "fused.toml")
    driver = prepare_run(config, tmp_path / "driver", progress=False)
    with mock.patch("zsgen.evaluate.tuning.tune_on_validation", side_effect=AssertionError("tuned again")):
        worker = prepare_run(config, tmp_path / "worker", progress=False, fusions=driver.fusions)
    assert not list((tmp_path / "worker").glob("fusion-*.toml"))
    assert worker.fingerprint == driver.fingerprint
    rows: list[dict] = []
    rank_cases(worker, worker.cases, rows.append)
    assert [json.dumps(row, sort_keys=True) for row in rows] == [
        json.dumps(row, sort_keys=True) for row in per_user(run)
    ]
