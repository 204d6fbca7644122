"""The signal registry: typed parameters per kind, one name per signal, kinds registered from outside zsgen."""

from __future__ import annotations

import inspect
import json
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.evaluate.config import load_config
from zsgen.interactions import Interactions
from zsgen.retrieval.fused import FusedRetriever
from zsgen.score import kinds
from zsgen.score.base import ScoreMatrix, Scorer, TrainData, UserQuery, require_logs
from zsgen.score.config import FusionConfig, SignalConfig
from zsgen.score.registry import SignalParams, SignalResources, register_signal, signal_kind, unregister_signal
from zsgen.types import Item

ROOT = Path(__file__).resolve().parents[2]


def test_a_parameter_of_another_kind_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"params\.neighbours: unknown key"):
        SignalConfig(kind="text", params={"user_vector": "last", "neighbours": 12})
    text = '[signals.t]\nkind = "text"\n[signals.t.params]\nneighbours = 12\n'
    with pytest.raises(
        ConfigError, match=r"^f\.toml: invalid fusion config: signals\.t\.params\.neighbours: unknown key"
    ):
        FusionConfig.from_toml(text, source="f.toml")
    with pytest.raises(ConfigError, match=r"signals\.t\.params\.user_vector: .*got 'sideways'"):
        FusionConfig.from_toml(text.replace("neighbours = 12", 'user_vector = "sideways"'), source="f.toml")


@pytest.mark.parametrize("old", ["embedding", "cosine"])
def test_an_old_name_of_text_loads_as_text_with_a_warning(old: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old!r} is an old name of 'text'"):
        config = FusionConfig.from_toml(f'[signals.t]\nkind = "{old}"\n[signals.t.params]\nhistory_length = 3\n')
    signal = config.signals["t"]
    assert signal.kind == "text" and isinstance(signal.params, kinds.TextParams)
    assert signal.params.history_length == 3
    assert 'kind = "text"' in config.to_toml() and old not in config.to_toml()


@pytest.mark.parametrize(
    ("kind", "scorer"),
    [
        ("text", kinds.TextCosineScorer),
        ("popularity", kinds.PopularityScorer),
        ("cooccurrence", kinds.CooccurrenceScorer),
        ("user_filtering", kinds.UserFilteringScorer),
        ("item_filtering", kinds.ItemFilteringScorer),
        ("group_popularity", kinds.GroupPopularityScorer),
        ("llm", kinds.LLMScorer),
    ],
)
def test_parameter_defaults_are_the_scorers_defaults(kind: str, scorer: type) -> None:
    """An unset parameter means the scorer's default, whether a config or code builds the scorer."""
    defaults = {name: p.default for name, p in inspect.signature(scorer).parameters.items() if p.default is not p.empty}
    fields = signal_kind(kind).params.model_fields
    assert fields, kind
    for name, field in fields.items():
        assert defaults[name] == field.default, (kind, name)


def _committed_fusion_files() -> Iterator[Path]:
    yield ROOT / "zsgen" / "data" / "fusion_default.toml"
    yield from sorted((ROOT / "evaluation" / "configs" / "fusion").glob("*.toml"))
    yield from sorted((ROOT / "evaluation" / "results").glob("*/fusion-*.toml"))
    yield from sorted((ROOT / "evaluation" / "results").glob("fusion_ml100k_*.toml"))


@pytest.mark.parametrize("path", list(_committed_fusion_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_fusion_file_loads_and_writes_back_its_signals_unchanged(path: Path) -> None:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    config = FusionConfig.load(path)
    written = tomllib.loads(config.to_toml())
    for signal in raw["signals"].values():
        signal.setdefault("params", {})  # an empty table is written for a signal without parameters, as before
    assert written["signals"] == raw["signals"]
    assert list(written["signals"]) == list(raw["signals"])
    for name, signal in raw["signals"].items():  # key order too: a tuned file reads like its source
        assert list(written["signals"][name].get("params", {})) == list(signal.get("params", {}))


@pytest.mark.parametrize("path", sorted((ROOT / "evaluation" / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_evaluation_config_loads(path: Path) -> None:
    from zsgen.evaluate.fusion import fusion_specs

    config = load_config(path)
    for _, spec in fusion_specs(config):
        assert spec.fusion is not None
        FusionConfig.load(spec.fusion)


# -- a kind registered from outside zsgen ---------------------------------------------------------------------------
class RecentPopularityParams(SignalParams):
    last: int = 2


class RecentPopularityScorer:
    """How often each item was among users' ``last`` events: a signal fitted on the log, defined only in this test."""

    needs_logs = True

    def __init__(self, last: int, name: str) -> None:
        self.last = last
        self.name = name
        self.counts: np.ndarray | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> RecentPopularityScorer:
        train = require_logs(self.name, train, catalog)
        counts = np.zeros(train.n_items)
        for sequence in train.sequences:
            np.add.at(counts, sequence[-self.last :], 1.0)
        self.counts = counts
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        assert self.counts is not None
        return np.tile(self.counts, (len(queries), 1))


@pytest.fixture
def recent_popularity() -> Iterator[None]:
    @register_signal("recent_popularity", RecentPopularityParams, needs_logs=True)
    def build(name: str, params: RecentPopularityParams, resources: SignalResources) -> Scorer:
        return RecentPopularityScorer(params.last, name)

    yield
    unregister_signal("recent_popularity")


def _data() -> tuple[Catalog, Interactions]:
    catalog = Catalog([Item(id=f"i{k}", title=f"item {k}") for k in range(6)])
    # Items 4 and 5 are every user's last events; items 0..3 come earlier and more often overall.
    rows = [(u, k, t) for u in range(4) for t, k in enumerate([0, 1, 2, 3, 0, 1, 4 + u % 2])]
    log = Interactions(
        user_ids=[f"u{u}" for u in range(4)],
        user_index=np.array([u for u, _, _ in rows], dtype=np.int64),
        item_index=np.array([k for _, k, _ in rows], dtype=np.int64),
        timestamp=np.array([float(t) for _, _, t in rows]),
        rating=np.full(len(rows), np.nan),
    )
    return catalog, log


@pytest.mark.usefixtures("recent_popularity")
def test_a_kind_registered_outside_zsgen_works_in_a_fusion_config_and_first_stage() -> None:
    text = '[signals.rp]\nkind = "recent_popularity"\n[signals.rp.params]\nlast = 1\n[weights]\nrp = 1.0\n'
    config = FusionConfig.from_toml(text)
    assert isinstance(config.signals["rp"].params, RecentPopularityParams)
    assert FusionConfig.from_toml(config.to_toml()) == config
    with pytest.raises(ConfigError, match=r"signals\.rp\.params\.neighbours: unknown key"):
        FusionConfig.from_toml(text.replace("last = 1", "neighbours = 3"))
    catalog, log = _data()
    retriever = FusedRetriever(catalog, config, log)
    top = [c.id for c in retriever.retrieve(["i0"], k=2)]
    assert top == ["i4", "i5"]  # the last events, which plain popularity would rank below i0..i3
    with pytest.raises(ConfigError, match="all need interaction logs"):
        FusedRetriever(catalog, config, None)


@pytest.mark.usefixtures("recent_popularity")
def test_a_kind_registered_outside_zsgen_is_a_ranker_kind(tmp_path: Path) -> None:
    from tests.evaluate.test_run import write_log
    from zsgen.evaluate.runner import read_log, run_evaluation
    from zsgen.paths import data_dir

    write_log(tmp_path)
    text = f"""
name = "plugin"
protocol = "llmrank"
history_length = 5
users = 6
[dataset]
path = {json.dumps((data_dir() / "demo_catalog.jsonl").as_posix())}
interactions = "log.jsonl"
[candidates]
n = 6
[metrics]
bootstrap = 0
[[rankers]]
name = "recent"
kind = "recent_popularity"
last = 3
[[rankers]]
name = "popularity"
kind = "popularity"
"""
    (tmp_path / "plugin.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "plugin.toml")
    assert config.rankers[0].model_dump() == {"name": "recent", "kind": "recent_popularity", "last": 3}
    with pytest.raises(ConfigError, match=r"rankers\.0\.first: unknown key"):  # its parameter model decides
        load_config(tmp_path / "plugin.toml", {"rankers": [{"name": "r", "kind": "recent_popularity", "first": 1}]})
    run_evaluation(config, tmp_path / "out", progress=False)
    rows = read_log(tmp_path / "out" / "per_user.jsonl")
    assert len(rows) == 6 and all(set(row["rankers"]) == {"recent", "popularity"} for row in rows.values())
    with pytest.raises(ConfigError, match=r"rankers\.0\.kind: unknown ranker kind \(got 'telepathy'\)"):
        load_config(tmp_path / "plugin.toml", {"rankers": [{"name": "t", "kind": "telepathy"}]})
