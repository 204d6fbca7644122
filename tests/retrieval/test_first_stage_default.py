"""The strong path by default (issue 13, point 5): a dataset with an interaction log gets the fused first stage with
the weights zsgen ships; without a log, text similarity as before; ``first_stage`` / ``fusion`` (``--first-stage`` /
``--fusion``) override, and contradictions are one clear error. Real packaged MiniLM throughout; a hand-built log
where co-occurrence makes one item the obvious next one; the real ML-100K where it is checked out."""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.cli import main
from zsgen.embed import Encoder, default_encoder
from zsgen.errors import ConfigError
from zsgen.interactions import Interactions
from zsgen.loaders import load_dataset, load_demo, load_demo_user
from zsgen.paths import data_dir
from zsgen.recommender import Recommender
from zsgen.retrieval import FusedRetriever, Retriever
from zsgen.retrieval.choice import choose_first_stage
from zsgen.retrieval.fused import GIVEN, PACKAGED
from zsgen.score.config import LOG_KINDS, FusionConfig, SignalConfig, packaged_fusion_path

ROOT = Path(__file__).resolve().parents[2]
#: The committed run whose validation-tuned weights the package ships.
SOURCE_RUN = ROOT / "evaluation" / "results" / "full-catalog" / "fusion-fused.toml"

#: The demo user watched five space films; in the hand-built log everyone who watched them went on to a food
#: documentary, which text similarity alone would never put near the top.
NEXT = "m007"  # Curry Trail (Documentary, Food)
N_USERS = 40


@pytest.fixture(autouse=True)
def restore_log_level() -> Iterator[None]:
    """main() sets the root logger's level from -v/-q; keep one test's flags from leaking into the next."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    """The packaged MiniLM behind a cache of this module's own: the catalog is encoded once for all its stages."""
    return default_encoder(cache=tmp_path_factory.mktemp("emb") / "emb.sqlite")


def log_rows(catalog: Catalog) -> list[tuple[str, str, float]]:
    """(user, item, time): each user watched a few random films, then the demo user's space films, then NEXT."""
    rng = np.random.default_rng(0)
    history = load_demo_user().history
    others = [i for i in catalog.ids if i not in {*history, NEXT}]
    rows = []
    for user in range(N_USERS):
        items = [*rng.choice(others, size=3, replace=False).tolist(), *history, NEXT]
        rows += [(f"u{user}", item, float(1000 * user + t)) for t, item in enumerate(items)]
    return rows


@pytest.fixture(scope="module")
def log(catalog: Catalog) -> Interactions:
    rows = log_rows(catalog)
    users = sorted({u for u, _, _ in rows}, key=lambda u: int(u[1:]))
    position = {u: n for n, u in enumerate(users)}
    return Interactions(
        user_ids=users,
        user_index=np.array([position[u] for u, _, _ in rows], dtype=np.int64),
        item_index=np.array([catalog.index_of(i) for _, i, _ in rows], dtype=np.int64),
        timestamp=np.array([t for _, _, t in rows]),
        rating=np.full(len(rows), np.nan),
    )


# -- the packaged defaults -----------------------------------------------------------------------------------------
def test_packaged_defaults_load_validate_and_say_where_they_come_from() -> None:
    config = FusionConfig.packaged()
    path = packaged_fusion_path()
    assert path.parent == data_dir()  # inside the package, shipped with the wheel like the demo catalog
    assert config.tuned is not None and config.tuned.split == "validation"
    # every signal works on any dataset with a log: text (the packaged encoder) and log-based kinds, no LLM
    assert {s.kind for s in config.signals.values()} <= {"text", *LOG_KINDS}
    active = {config.signals[name].kind for name in config.active()}
    assert "text" in active and active & LOG_KINDS
    header = path.read_text(encoding="utf-8").split("\nnormalisation")[0]
    assert "evaluation/results/full-catalog" in header and "VALIDATION" in header and "NDCG@10" in header
    assert "only roughly" in header
    # the weights are the committed validation-tuned run's, unchanged: re-tuning that run means copying them again
    run = FusionConfig.load(SOURCE_RUN)
    assert config.signals == run.signals and config.weights == run.weights
    assert (config.normalisation, config.method) == (run.normalisation, run.method)
    assert run.tuned is not None and config.tuned.value == run.tuned.value and config.tuned.metric == run.tuned.metric


def test_the_wheel_ships_the_package_data_folder() -> None:
    """The defaults live in zsgen/data, which the wheel carries whole (no exclusion of it in the hatch config)."""
    hatch = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"]["build"]
    wheel = hatch["targets"]["wheel"]
    assert wheel["packages"] == ["zsgen"] and not wheel.get("exclude") and not hatch.get("exclude")
    assert packaged_fusion_path().is_file()


# -- the rule ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first_stage", "has_log", "has_fusion", "options", "expected"),
    [
        (None, True, False, {}, "fused"),
        (None, False, False, {}, "cosine"),
        (None, False, True, {}, "fused"),  # an own fusion file works on its text signals, as before
        (None, True, False, {"user_vector": "last"}, "cosine"),  # cosine options keep the stage they describe
        (None, True, False, {"threshold": 0.5}, "cosine"),
        (None, True, False, {"user_vector": None, "threshold": None}, "fused"),  # None = not given
        ("cosine", True, False, {}, "cosine"),
        ("fused", True, False, {"threshold": 0.5}, "fused"),  # a threshold in the fused score's scale
        ("fused", False, True, {}, "fused"),
    ],
)
def test_choice(
    first_stage: str | None, has_log: bool, has_fusion: bool, options: dict[str, object], expected: str
) -> None:
    assert choose_first_stage(first_stage, has_log=has_log, has_fusion=has_fusion, options=options) == expected


@pytest.mark.parametrize(
    ("first_stage", "has_log", "has_fusion", "options", "message"),
    [
        ("fused", False, False, {}, "needs an interaction log"),
        ("cosine", True, True, {}, "contradicts the fusion config"),
        ("fused", True, False, {"user_vector": "last"}, "cannot honour user_vector"),
        (None, True, True, {"history_length": 3}, "cannot honour history_length"),
        ("fusion", True, False, {}, "first_stage must be one of cosine, fused"),
    ],
)
def test_contradictions_are_config_errors(
    first_stage: str | None, has_log: bool, has_fusion: bool, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        choose_first_stage(first_stage, has_log=has_log, has_fusion=has_fusion, options=options)


# -- the Recommender -----------------------------------------------------------------------------------------------
@pytest.mark.slow  # 21 s (and 25 s of module set-up) on the loaded 2-core machine: not for `make test-fast`
def test_a_log_means_the_fused_first_stage_with_the_packaged_weights(
    catalog: Catalog, encoder: Encoder, log: Interactions
) -> None:
    history = load_demo_user().history
    strong = Recommender(catalog, encoder=encoder, interactions=log)
    assert isinstance(strong.retriever, FusedRetriever) and strong.retriever.config == FusionConfig.packaged()
    ranking = strong.recommend(history, k=10)
    assert ranking.first_stage == "fusion" and ranking.fusion_weights == PACKAGED
    assert {item.source for item in ranking.items} == {"fusion"}
    # the log says what comes next; text similarity alone does not see it
    assert ranking.item_ids[0] == NEXT
    cosine = Recommender(catalog, encoder=encoder).recommend(history, k=10)
    assert NEXT not in cosine.item_ids and cosine.item_ids != ranking.item_ids
    assert not set(ranking.item_ids) & set(history)
    # exactly the packaged fusion, fitted on this log
    expected = FusedRetriever.packaged(catalog, log, encoder=encoder).retrieve(history, k=10)
    assert ranking.item_ids == [c.id for c in expected]


def test_no_log_means_text_similarity_as_before(catalog: Catalog, encoder: Encoder) -> None:
    history = load_demo_user().history
    plain = Recommender(catalog, encoder=encoder)
    assert isinstance(plain.retriever, Retriever) and plain.fusion_weights is None
    ranking = plain.recommend(history, k=8)
    assert ranking.first_stage == "cosine" and ranking.fusion_weights is None
    assert {item.source for item in ranking.items} == {"cosine"}
    assert ranking.item_ids == [c.id for c in Retriever(catalog, encoder).retrieve(history, k=8)]


def test_explicit_choices_override_the_default(
    catalog: Catalog, encoder: Encoder, log: Interactions, tmp_path: Path
) -> None:
    history = load_demo_user().history
    cosine_order = Recommender(catalog, encoder=encoder).recommend(history, k=8).item_ids
    # cosine, log or not
    chosen = Recommender(catalog, encoder=encoder, interactions=log, first_stage="cosine").recommend(history, k=8)
    assert chosen.item_ids == cosine_order and chosen.first_stage == "cosine"
    # cosine options without a choice keep the cosine stage they describe
    kept = Recommender(catalog, encoder=encoder, interactions=log, user_vector="last")
    assert isinstance(kept.retriever, Retriever) and kept.retriever.user_vector == "last"
    assert isinstance(Recommender(catalog, encoder=encoder, interactions=log, threshold=0.1).retriever, Retriever)
    # fused, said explicitly: the same as the default
    fused = Recommender(catalog, encoder=encoder, interactions=log, first_stage="fused").recommend(history, k=8)
    assert fused.item_ids[0] == NEXT and fused.fusion_weights == PACKAGED
    # a fusion config of one's own, in code or as a (tuned) file: its weights, and the provenance says so
    text_only = FusionConfig(
        signals={"text": SignalConfig(kind="text", params={"user_vector": "mean", "history_length": 100})},
        weights={"text": 1.0},
    )
    own = Recommender(catalog, encoder=encoder, interactions=log, fusion=text_only).recommend(history, k=8)
    assert own.fusion_weights == GIVEN and NEXT not in own.item_ids
    assert set(own.item_ids) == set(cosine_order)  # text cosine alone, mean of the whole history: the same items
    path = tmp_path / "tuned.toml"
    FusionConfig.packaged().with_weights({"sequential": 1.0}).save(path)
    from_file = Recommender(catalog, encoder=encoder, interactions=log, fusion=path).recommend(history, k=3)
    assert from_file.fusion_weights == str(path) and from_file.item_ids[0] == NEXT


def test_contradictory_recommender_arguments_are_refused(catalog: Catalog, encoder: Encoder, log: Interactions) -> None:
    with pytest.raises(ConfigError, match="needs an interaction log"):
        Recommender(catalog, encoder=encoder, first_stage="fused")
    with pytest.raises(ConfigError, match="contradicts the fusion config"):
        Recommender(catalog, encoder=encoder, first_stage="cosine", fusion=FusionConfig.packaged())
    with pytest.raises(ConfigError, match="cannot honour user_vector"):
        Recommender(catalog, encoder=encoder, interactions=log, first_stage="fused", user_vector="last")
    with pytest.raises(ConfigError, match="fusion must be a FusionConfig"):
        Recommender(catalog, encoder=encoder, interactions=log, fusion=3)  # type: ignore[arg-type]
    stage = Retriever(catalog, encoder)
    for extra in ({"interactions": log}, {"first_stage": "cosine"}, {"fusion": FusionConfig.packaged()}):
        with pytest.raises(ConfigError, match=r"the first stage is already chosen"):
            Recommender(catalog, retriever=stage, **extra)  # type: ignore[arg-type]


@pytest.mark.data
@pytest.mark.slow
def test_movielens_gets_the_fused_first_stage(shared_data: Path, tmp_path: Path) -> None:
    """On the real ML-100K the default is the packaged fusion: the same list as the committed run's tuned file,
    and Star Wars leads to its sequel, which text similarity ranks lower."""
    ml = load_dataset(shared_data / "ml-100k")
    assert ml.interactions is not None
    encoder = default_encoder(cache=tmp_path / "emb.sqlite")
    history = ["Toy Story", "Star Wars (1977)"]
    ranking = Recommender(ml.catalog, encoder=encoder, interactions=ml.interactions).recommend(history, k=10)
    assert ranking.first_stage == "fusion" and ranking.fusion_weights == PACKAGED
    run = FusedRetriever.from_file(SOURCE_RUN, ml.catalog, ml.interactions, encoder=encoder)
    assert ranking.item_ids == [c.id for c in run.retrieve([ml.catalog.resolve(h) for h in history], k=10)]
    assert ml.catalog.get(ranking.item_ids[0]).title == "Return of the Jedi"
    cosine = Recommender(ml.catalog, encoder=encoder, interactions=ml.interactions, first_stage="cosine")
    assert cosine.recommend(history, k=10).item_ids[0] != ranking.item_ids[0]


# -- the command line ----------------------------------------------------------------------------------------------
@pytest.fixture
def logged_dataset(tmp_path: Path, catalog: Catalog) -> list[str]:
    """``--catalog`` (the packaged demo catalog) with ``--interactions`` (the hand-built log as JSONL)."""
    path = tmp_path / "log.jsonl"
    path.write_text(
        "".join(json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n" for u, i, t in log_rows(catalog)),
        encoding="utf-8",
    )
    catalog_path = (data_dir() / "demo_catalog.jsonl").as_posix()
    return ["--catalog", catalog_path, "--interactions", str(path), "--embedding-cache", str(tmp_path / "emb.sqlite")]


def recommend(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["recommend", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_default_with_a_log_is_fused_and_says_so(
    capsys: pytest.CaptureFixture[str], logged_dataset: list[str], tmp_path: Path
) -> None:
    user = ["--history", *load_demo_user().history, "--k", "5"]
    code, out, _ = recommend(capsys, *logged_dataset, *user, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["first_stage"] == "fusion" and result["fusion_weights"] == PACKAGED
    assert {i["source"] for i in result["items"]} == {"fusion"} and result["items"][0]["id"] == NEXT
    code, table, _ = recommend(capsys, *logged_dataset, *user)
    assert code == 0 and "first stage: fusion with the packaged defaults" in table
    # --first-stage cosine: the old behaviour, provenance included
    code, out, _ = recommend(capsys, *logged_dataset, *user, "--json", "--first-stage", "cosine")
    cosine = json.loads(out)
    assert code == 0 and cosine["first_stage"] == "cosine" and cosine["fusion_weights"] is None
    assert NEXT not in {i["id"] for i in cosine["items"]} and {i["source"] for i in cosine["items"]} == {"cosine"}
    # a cosine option without --first-stage keeps cosine
    code, out, _ = recommend(capsys, *logged_dataset, *user, "--json", "--user-vector", "mean")
    assert code == 0 and json.loads(out)["first_stage"] == "cosine"
    # --fusion FILE: the fused stage with that file's weights, named in the provenance
    path = tmp_path / "tuned.toml"
    FusionConfig.packaged().with_weights({"cooccurrence": 1.0}).save(path)
    code, out, _ = recommend(capsys, *logged_dataset, *user, "--json", "--fusion", str(path))
    assert code == 0 and json.loads(out)["fusion_weights"] == str(path)
    assert json.loads(out)["items"][0]["id"] == NEXT


@pytest.mark.slow
def test_cli_without_a_log_stays_cosine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = recommend(capsys, "--demo", "--k", "3", "--json", "--embedding-cache", str(tmp_path / "e.sqlite"))
    assert code == 0 and json.loads(out)["first_stage"] == "cosine"
    code, table, _ = recommend(capsys, "--demo", "--k", "3", "--embedding-cache", str(tmp_path / "e.sqlite"))
    assert code == 0 and "first stage" not in table  # the demo's output is as it was


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demo", "--first-stage", "fused"], "--first-stage fused needs a dataset with an interaction log"),
        (["--demo", "--first-stage", "cosine", "--fusion", "x.toml"], "--first-stage cosine contradicts --fusion"),
        (["--demo", "--first-stage", "fused", "--user-vector", "last"], "needs a dataset with an interaction log"),
    ],
)
def test_cli_contradictions_are_one_line_and_non_zero(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Refused before any model loads: the checks need only the flags and whether the dataset has a log."""
    code, out, err = recommend(capsys, *argv, "--history", "m001")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith("zsgen: error:"), err
    assert message in lines[0]


def test_cli_fused_with_a_cosine_option_is_one_line(
    capsys: pytest.CaptureFixture[str], logged_dataset: list[str]
) -> None:
    code, out, err = recommend(
        capsys, *logged_dataset, "--history", "m001", "--first-stage", "fused", "--history-length", "3"
    )
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and "cannot honour history_length" in lines[0], err


def test_cli_unknown_first_stage_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recommend", "--demo", "--first-stage", "bm25"])
    assert exc.value.code == 2 and "--first-stage" in capsys.readouterr().err
