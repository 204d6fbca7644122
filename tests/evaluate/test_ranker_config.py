"""Each ranker kind's own typed config: a table takes only its kind's keys, a signal ranker's keys are that signal's
parameters and reach its scorer, the text signal has one name, and run folders written before all this still resume.
"""

from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.evaluate.build import RankerContext, build_ranker
from zsgen.evaluate.config import config_from_dict, load_config
from zsgen.evaluate.generators import ScorerFactory
from zsgen.evaluate.ranker_config import (
    FusedRankerConfig,
    LLMRankerConfig,
    PlainRankerConfig,
    SignalRankerConfig,
    TrainedRankerConfig,
    ranker_config,
    ranker_kinds,
)
from zsgen.evaluate.rankers import ScorerRanker
from zsgen.evaluate.runner import run_fingerprint
from zsgen.interactions import Interactions
from zsgen.score import TrainData
from zsgen.types import Item

ROOT = Path(__file__).resolve().parents[2]


def config(*rankers: dict[str, object], **extra: object) -> dict[str, object]:
    return {"name": "t", "protocol": "nir", "dataset": {"path": "data"}, "rankers": list(rankers), **extra}


def test_each_kind_is_validated_by_its_own_model() -> None:
    loaded = config_from_dict(
        config(
            {"name": "r", "kind": "random"},
            {"name": "g", "kind": "generator"},
            {"name": "f", "kind": "fused", "fusion": "f.toml", "tune": False},
            {"name": "l", "kind": "llm", "rerank": {"method": "listwise"}, "cost_per_million_prompt_tokens": 0.5},
            {"name": "e", "kind": "ease", "model": {"l2": [10.0]}},
            {"name": "t", "kind": "text", "user_vector": "last", "half_life": 3},
            {"name": "p", "kind": "popularity", "window": 30},
            {"name": "gp", "kind": "group_popularity", "group_by": ["gender"]},
        )
    )
    types = [type(r) for r in loaded.rankers]
    assert types[:5] == [PlainRankerConfig, PlainRankerConfig, FusedRankerConfig, LLMRankerConfig, TrainedRankerConfig]
    assert all(issubclass(t, SignalRankerConfig) for t in types[5:])
    text, popularity, groups = loaded.rankers[5:]
    assert isinstance(text, SignalRankerConfig) and text.params() == {"user_vector": "last", "half_life": 3}
    assert isinstance(popularity, SignalRankerConfig) and popularity.params() == {"window": 30}
    assert isinstance(groups, SignalRankerConfig) and groups.params() == {"group_by": ["gender"]}
    # written back as given: only the keys the table set, so a resolved config reads like its file
    assert loaded.model_dump(mode="json")["rankers"][6] == {"name": "p", "kind": "popularity", "window": 30}


@pytest.mark.parametrize(
    ("ranker", "location"),
    [
        ({"name": "x", "kind": "popularity", "user_vector": "mean"}, "rankers.0.user_vector: unknown key"),
        ({"name": "x", "kind": "text", "group_by": ["age"]}, "rankers.0.group_by: unknown key"),
        ({"name": "x", "kind": "text", "fusion": "f.toml"}, "rankers.0.fusion: unknown key"),
        ({"name": "x", "kind": "random", "rerank": {"method": "listwise"}}, "rankers.0.rerank: unknown key"),
        ({"name": "x", "kind": "llm", "rerank": {}, "model": {"l2": [1.0]}}, "rankers.0.model: unknown key"),
        ({"name": "x", "kind": "ease", "cost_per_million_prompt_tokens": 1.0}, "rankers.0.cost_per_million_prompt"),
        ({"name": "x", "kind": "text", "user_vector": "telepathy"}, "rankers.0.user_vector: "),
        ({"name": "x", "kind": "popularity", "window": "soon"}, "rankers.0.window"),
        ({"name": "x", "kind": "oracle"}, "rankers.0.kind: unknown ranker kind (got 'oracle')"),
        ({"name": "x"}, "rankers.0.kind: required"),
        ({"name": "x", "kind": "llm"}, "needs a [rankers.rerank] table"),
    ],
)
def test_a_key_of_another_kind_is_an_error_naming_it(ranker: dict[str, object], location: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(config(ranker), source="run.toml")
    assert location in str(caught.value)
    assert str(caught.value).startswith("run.toml: ") and "\n" not in str(caught.value)


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    data = config({"name": "a", "kind": "text", "colour": 1}, {"name": "b", "kind": "oracle"}, shade=2)
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    message = str(caught.value)
    assert "rankers.0.colour: unknown key" in message
    assert "rankers.1.kind: unknown ranker kind" in message
    assert "shade: unknown key" in message


def test_ranker_kinds_list_the_signal_kinds_but_not_the_llm_signal() -> None:
    kinds = ranker_kinds()
    assert {"random", "generator", "fused", "llm", "ease", "sasrec", "hybrid", "text", "popularity"} <= set(kinds)
    assert kinds.count("llm") == 1  # the LLM ranker; the LLM *signal* scores another signal's candidates
    assert "cosine" not in kinds and "embedding" not in kinds
    assert ranker_config("text") is ranker_config("text")  # one model per kind


def test_old_names_of_the_text_signal_load_as_text_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'cosine' is an old name of 'text'"):
        old = config_from_dict(config({"name": "c", "kind": "cosine", "user_vector": "mean"}))
    with pytest.warns(DeprecationWarning, match="'embedding' is an old name of 'text'"):
        generator = config_from_dict(config({"name": "c", "kind": "text"}, candidates={"generator": "embedding"}))
    with pytest.warns(DeprecationWarning, match="'embedding' is an old name of 'text'"):
        recall = config_from_dict(config({"name": "c", "kind": "text"}, metrics={"recall_generators": ["embedding"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = config_from_dict(config({"name": "c", "kind": "text", "user_vector": "mean"}))
    assert old.rankers[0].kind == "text" and old.model_dump() == new.model_dump()
    assert old.fingerprint() == new.fingerprint()  # either spelling resumes the other's run
    assert generator.candidates.generator == "text" and recall.metrics.recall_generators == ["text"]
    assert new.baseline == "c"  # the first text ranker is the paired-comparison baseline


# Not llmrank-all: its fusion file was edited (a key renamed) after that run, so its folder was refused before this
# change as well; the fusion file's content is part of the fingerprint, its form is not.
@pytest.mark.parametrize("name", ["full-catalog", "full-catalog-trained", "cold-items", "cold-users-n1", "mixed-items"])
def test_run_folders_written_with_the_flat_ranker_model_still_resume(name: str) -> None:
    """A results folder's ``config.toml`` from before the per-kind models (every ranker with every key, ``cosine``
    rankers, ``embedding`` generators) loads, and gives the fingerprint recorded in it: the run resumes."""
    folder = ROOT / "evaluation" / "results" / name
    recorded = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))["provenance"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        resolved = load_config(folder / "config.toml")
    source = load_config(ROOT / "evaluation" / "configs" / f"{name}.toml")
    assert resolved.fingerprint() == source.fingerprint()
    from zsgen.evaluate.fusion import fusion_specs

    # Fusion files are hashed by content; the resolved config names the copies beside the results.
    assert all(Path(str(spec.fusion)).exists() for _, spec in fusion_specs(resolved))
    assert run_fingerprint(resolved, [], recorded["dataset"]["sha256"]) == recorded["fingerprint"]


# -- a signal ranker's keys reach its scorer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def context() -> RankerContext:
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 12
    users = np.repeat(np.arange(n_users), 6)
    items = np.concatenate([rng.choice(n_items, size=6, replace=False) for _ in range(n_users)])
    log = Interactions(
        user_ids=[f"u{u}" for u in range(n_users)],
        user_index=users.astype(np.int64),
        item_index=items.astype(np.int64),
        timestamp=np.tile(np.arange(6, dtype=np.float64), n_users),
        rating=np.full(items.size, np.nan),
    )
    catalog = Catalog([Item(id=str(i), title=f"Item {i}") for i in range(n_items)])
    train = TrainData.from_interactions(log, holdout=1, n_items=n_items)
    loaded = config_from_dict(config({"name": "p", "kind": "popularity", "window": 2, "blend": 0.5}))
    return RankerContext(loaded, catalog, log, ScorerFactory(catalog, train), Path("."), {})


def test_a_signal_rankers_keys_are_its_scorers_parameters(context: RankerContext) -> None:
    ranker = build_ranker(context.config.rankers[0], context)
    assert isinstance(ranker, ScorerRanker) and ranker.kind == "popularity"
    scorer = ranker.scorer
    assert (getattr(scorer, "window", None), getattr(scorer, "blend", None)) == (2, 0.5)
    default = build_ranker(config_from_dict(config({"name": "d", "kind": "popularity"})).rankers[0], context)
    assert isinstance(default, ScorerRanker)
    assert getattr(default.scorer, "window", "unset") is None  # unset keys keep the signal's default


def test_a_resolved_config_round_trips(tmp_path: Path) -> None:
    from zsgen.evaluate.config import write_resolved

    loaded = config_from_dict(
        config(
            {"name": "t", "kind": "text", "user_vector": "recency"},
            {"name": "l", "kind": "llm", "rerank": {"method": "listwise"}},
            {"name": "s", "kind": "sasrec"},
        )
    )
    write_resolved(loaded, tmp_path / "config.toml", {"fingerprint": "x"})
    again = load_config(tmp_path / "config.toml")
    assert again.model_dump() == loaded.model_dump() and again.fingerprint() == loaded.fingerprint()
    written = tomllib.loads((tmp_path / "config.toml").read_text(encoding="utf-8"))
    assert [sorted(r) for r in written["rankers"]] == [
        ["kind", "name", "user_vector"],
        ["cost_per_million_completion_tokens", "cost_per_million_prompt_tokens", "kind", "name", "rerank"],
        ["kind", "name"],
    ]
    assert json.dumps(written["rankers"][0]) == json.dumps({"name": "t", "kind": "text", "user_vector": "recency"})


def test_a_signal_parameter_models_own_checks_run_when_the_config_is_read() -> None:
    from pydantic import model_validator

    from zsgen.score import SignalParams, register_signal
    from zsgen.score.popularity import PopularityScorer
    from zsgen.score.registry import unregister_signal

    class BandParams(SignalParams):
        low: int = 0
        high: int = 10

        @model_validator(mode="after")
        def _ordered(self) -> BandParams:
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
            return self

    register_signal("band_popularity", BandParams, needs_logs=True)(lambda name, p, r: PopularityScorer(name=name))
    try:
        fine = config_from_dict(config({"name": "b", "kind": "band_popularity", "low": 2}))
        assert isinstance(fine.rankers[0], SignalRankerConfig) and fine.rankers[0].params() == {"low": 2}
        with pytest.raises(ConfigError, match=r"rankers\.0: low \(12\) must not exceed high \(10\)"):
            config_from_dict(config({"name": "b", "kind": "band_popularity", "low": 12}))
    finally:
        unregister_signal("band_popularity")
