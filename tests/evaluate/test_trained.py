"""Trained baselines inside ``zsgen evaluate``: ranker kinds ``ease`` and ``sasrec``, their ``model`` tables, what
the run records about their training, and that they rank the run's candidates from the training split only."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from zsgen.errors import ConfigError
from zsgen.evaluate import evaluate, load_config
from zsgen.evaluate.runner import read_log
from zsgen.paths import data_dir

CONFIG = """
name = "trained"
protocol = "{protocol}"
seed = 5
batch_users = 8

[dataset]
path = "{catalog}"
interactions = "log.jsonl"

[metrics]
baseline = "sasrec"
bootstrap = 50

[[rankers]]
name = "random"
kind = "random"

[[rankers]]
name = "ease"
kind = "ease"

[rankers.model]
l2 = [1.0, 10.0]

[[rankers]]
name = "sasrec"
kind = "sasrec"

[rankers.model]
hidden = 16
blocks = 1
max_length = 12
epochs = 3
"""


def write_dataset(folder: Path) -> list[str]:
    """Users who walk the packaged demo catalog in id order from a random start: the next item is the successor."""
    ids = [json.loads(line)["id"] for line in (data_dir() / "demo_catalog.jsonl").read_text().splitlines() if line]
    rng = np.random.default_rng(0)
    lines = []
    for u in range(30):
        start = int(rng.integers(0, len(ids)))
        for t in range(int(rng.integers(4, 10))):
            item = ids[(start + t) % len(ids)]
            lines.append(json.dumps({"user_id": f"u{u}", "item_id": item, "timestamp": 100 * u + t}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def config_file(folder: Path, protocol: str = "llmrank") -> Path:
    path = folder / f"{protocol}.toml"
    text = CONFIG.format(protocol=protocol, catalog=(data_dir() / "demo_catalog.jsonl").as_posix())
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    write_dataset(folder)
    return folder


@pytest.mark.parametrize("protocol", ["llmrank", "full_catalog"])
def test_trained_rankers_run_beside_the_others_and_record_their_training(folder: Path, protocol: str) -> None:
    out = folder / f"run-{protocol}"
    summary = evaluate(config_file(folder, protocol), out, progress=False)
    assert [r.name for r in summary.rankers] == ["random", "ease", "sasrec"]
    records = read_log(out / "per_user.jsonl")
    assert records and all(set(r["rankers"]) == {"random", "ease", "sasrec"} for r in records.values())
    provenance = tomllib.loads((out / "config.toml").read_text())["provenance"]
    ease, sasrec = provenance["trained"]["ease"], provenance["trained"]["sasrec"]
    assert ease["l2"] in (1.0, 10.0) and set(ease["validation"]) == {"1", "10"} and ease["seconds"] >= 0
    assert 1 <= sasrec["best_epoch"] <= sasrec["epochs"] <= 3 and sasrec["seed"] == 5 and sasrec["seconds"] >= 0
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert "model" not in resolved["rankers"][0]  # rankers without a model table keep their old form
    assert resolved["rankers"][2]["model"]["epochs"] == 3


def test_a_trained_run_reruns_to_identical_rankings(folder: Path) -> None:
    """Seeded training: the same config into a fresh folder gives the same per-user results."""
    logs = []
    for name in ("again-1", "again-2"):
        evaluate(config_file(folder), folder / name, progress=False)
        logs.append(read_log(folder / name / "per_user.jsonl"))
    assert logs[0] == logs[1]


def test_model_tables_are_checked_when_the_config_is_read(folder: Path) -> None:
    path = config_file(folder)
    text = path.read_text()
    bad = folder / "bad.toml"
    bad.write_text(text.replace("epochs = 3", "epochs = 3\nepochz = 4"))
    with pytest.raises(ConfigError, match=r"rankers\.2\.model\.epochz: unknown key"):
        load_config(bad)
    bad.write_text(text.replace('name = "random"\nkind = "random"', 'name = "random"\nkind = "random"\nmodel = {}'))
    with pytest.raises(ConfigError, match=r"rankers\.\d\.model: unknown key"):  # a key of another kind
        load_config(bad)
    bad.write_text(text.replace("l2 = [1.0, 10.0]", "l2 = [-1.0]"))
    with pytest.raises(ConfigError, match="l2 weights must be positive"):
        load_config(bad)


def test_configs_without_trained_rankers_keep_their_fingerprint() -> None:
    """The ``model`` key is left out of a ranker without one, so such a config's dump (and so its fingerprint and
    resolved file) is what it was before the key existed, while a model table does change the fingerprint."""
    repo = Path(__file__).resolve().parents[2]
    config = load_config(repo / "evaluation" / "configs" / "llmrank-all.toml")
    assert all("model" not in ranker.model_dump() for ranker in config.rankers)
    trained = load_config(repo / "evaluation" / "configs" / "llmrank-all-trained.toml")
    changed = trained.model_copy(deep=True)
    changed.rankers[-1].model = {"epochs": 5}
    assert changed.fingerprint() != trained.fingerprint()
