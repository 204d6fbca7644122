"""Evaluation configs: protocol presets, path resolution, the resolved copy, and clear errors for bad files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from zsgen.errors import ConfigError
from zsgen.evaluate.config import load_config, write_resolved
from zsgen.evaluate.fusion import fusion_specs

REPO = Path(__file__).resolve().parents[2]
# Evaluation configs; the fusion configs that fused rankers and generators name live apart, in configs/fusion/.
CONFIGS = sorted((REPO / "evaluation" / "configs").glob("*.toml"))
FUSION_CONFIGS = sorted((REPO / "evaluation" / "configs" / "fusion").glob("*.toml"))

MINIMAL = """
name = "t"
protocol = "{protocol}"
[dataset]
path = "data/set"
[[rankers]]
name = "pop"
kind = "popularity"
"""


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_committed_configs_load_and_name_the_shared_dataset() -> None:
    assert {p.stem for p in CONFIGS} >= {"full-catalog", "nir", "llmrank-h50", "llmrank-h5"}
    for path in CONFIGS:
        config = load_config(path)
        assert Path(config.dataset.path) == (REPO.parent / "shared" / "data" / "ml-100k").resolve()
        assert config.baseline is not None
        for _, spec in fusion_specs(config):
            assert Path(str(spec.fusion)) in FUSION_CONFIGS


def test_committed_fusion_configs_load() -> None:
    from zsgen.score.config import FusionConfig

    assert FUSION_CONFIGS
    for path in FUSION_CONFIGS:
        assert FusionConfig.load(path).signals


def test_protocol_presets_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    nir = load_config(write(tmp_path, MINIMAL.format(protocol="nir")))
    assert (nir.candidates.generator, nir.candidates.n, nir.candidates.neighbours) == ("user_filtering", 19, 12)
    assert nir.history_length == 8
    llmrank = load_config(write(tmp_path, MINIMAL.format(protocol="llmrank")))
    assert (llmrank.candidates.generator, llmrank.candidates.n, llmrank.history_length) == ("random", 20, 50)
    assert load_config(write(tmp_path, MINIMAL.format(protocol="full_catalog"))).candidates.generator == "full_catalog"
    # What the file says wins; the rest of the preset still applies (n = 19).
    text = "history_length = 3\n" + MINIMAL.format(protocol="nir") + '[candidates]\ngenerator = "item_filtering"\n'
    custom = load_config(write(tmp_path, text))
    assert custom.history_length == 3
    assert (custom.candidates.generator, custom.candidates.n) == ("item_filtering", 19)


def test_overrides_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "data").mkdir()
    path = write(folder, MINIMAL.format(protocol="nir").replace("data/set", "data"))
    assert load_config(path).dataset.path == str((folder / "data").resolve())  # beside the config file
    elsewhere = tmp_path / "cwd"
    (elsewhere / "only-here").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    path = write(folder, MINIMAL.format(protocol="nir").replace("data/set", "only-here"))
    assert load_config(path).dataset.path == str((elsewhere / "only-here").resolve())  # else the cwd
    config = load_config(path, {"users": 7, "seed": 3})
    assert (config.users, config.seed) == (7, 3)


def test_resolved_config_reads_back_as_it_ran(tmp_path: Path) -> None:
    config = load_config(CONFIGS[0])
    out = tmp_path / "config.toml"
    write_resolved(config, out, {"fingerprint": "abc", "versions": {"python": "3"}, "llm": {}})
    data = tomllib.loads(out.read_text(encoding="utf-8"))
    assert data["provenance"]["fingerprint"] == "abc"
    again = load_config(out)
    assert again.model_dump() == config.model_dump()
    assert again.fingerprint() == config.fingerprint()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL.format(protocol="netflix"), "unknown protocol 'netflix'"),
        (MINIMAL.format(protocol="nir").replace('kind = "popularity"', 'kind = "oracle"'), "rankers.0.kind"),
        (MINIMAL.format(protocol="nir") + "colour = 1\n", "unknown key"),
        (MINIMAL.format(protocol="nir").replace("[dataset]\npath", "[dataset]\nfile"), "dataset.path"),
        (MINIMAL.format(protocol="nir").replace('name = "t"\n', ""), "name"),
        (
            MINIMAL.format(protocol="full_catalog") + '[[rankers]]\nname="x"\nkind="llm"\n[rankers.rerank]\n',
            "full catalog",
        ),
        (MINIMAL.format(protocol="nir") + '[[rankers]]\nname="x"\nkind="llm"\n', "needs a [rankers.rerank] table"),
        (MINIMAL.format(protocol="nir") + '[[rankers]]\nname="pop"\nkind="random"\n', "unique"),
        (MINIMAL.format(protocol="nir") + '[metrics]\nbaseline = "cosine"\n', "baseline 'cosine' is not a ranker"),
        (
            MINIMAL.format(protocol="nir")
            + '[[rankers]]\nname="x"\nkind="llm"\n[rankers.rerank]\nmethod="telepathy"\n',
            "rankers.1.rerank.method",
        ),
        ('name = "t\n', "not valid TOML"),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value) and "Value error" not in str(caught.value)  # one line, as a user reads it


def test_config_error_locates_every_problem(tmp_path: Path) -> None:
    text = "colour = 1\n" + MINIMAL.format(protocol="nir").replace('kind = "popularity"', 'kind = "oracle"')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid evaluation config: ")
    assert "rankers.0.kind: " in message and "(got 'oracle')" in message and "colour: unknown key" in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="evaluation config not found"):
        load_config(tmp_path / "nope.toml")
