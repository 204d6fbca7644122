"""New items join the fused first stage without refitting: their text is encoded, their log-signal scores imputed from
their warm text neighbours, on the warm items' scale (issue 23 point 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.errors import DuplicateItemError
from zsgen.interactions import Interactions
from zsgen.loaders import load_dataset
from zsgen.recommender import Recommender
from zsgen.retrieval.base import Request
from zsgen.retrieval.fused import FusedRetriever
from zsgen.score.base import UserQuery
from zsgen.score.transfer.impute import IMPUTED_KINDS
from zsgen.serve.live import LiveCatalog
from zsgen.types import Item


def new_items(catalog: Catalog) -> tuple[Item, Item, Item]:
    """Star Wars, a new item that reads like it (a re-release), and a new item that reads like nothing popular."""
    star_wars = next(item for item in catalog if item.title == "Star Wars")
    new = Item(
        id="new-star-wars",
        title="Star Wars: The Special Edition",
        year=1997,
        genres=star_wars.genres,
        description="The Star Wars saga restored: Luke Skywalker, Han Solo and Princess Leia against Darth Vader.",
    )
    dull = Item(id="new-dull", title="Quarterly Tax Filing Procedures", year=1997, genres=("Documentary",))
    return star_wars, new, dull


def _fans(catalog: Catalog, interactions: Interactions, item: Item) -> tuple[list[list[str]], list[list[str]]]:
    index = catalog.index_of(item.id)
    fans, others = [], []
    for positions in interactions.event_order_by_user():
        items = interactions.item_index[positions]
        (fans if index in items[-5:] else others).append([catalog[int(i)].id for i in items])
    return fans, others


@pytest.fixture(scope="module")
def ml100k(shared_data: Path) -> tuple[Catalog, Interactions, FusedRetriever]:
    dataset = load_dataset(shared_data / "ml-100k")
    assert dataset.interactions is not None
    return dataset.catalog, dataset.interactions, FusedRetriever.packaged(dataset.catalog, dataset.interactions)


def _forbid_refit(stage: FusedRetriever) -> dict[str, Any]:
    """The fitted log scorers, each made to fail if anything fits it again."""
    logged = {
        name: scorer
        for name, scorer in stage.scorer.scorers.items()
        if stage.config.signals[name].kind in IMPUTED_KINDS
    }
    assert logged  # the packaged fusion has log signals

    def refit(*args: object, **kw: object) -> None:
        raise AssertionError("a fitted log signal was refitted")

    for scorer in logged.values():
        scorer.fit = refit
    return logged


def test_added_items_score_as_a_rebuild_with_them_would_and_nothing_is_refitted(
    ml100k: tuple[Catalog, Interactions, FusedRetriever],
) -> None:
    catalog, interactions, stage = ml100k
    star_wars, new, dull = new_items(catalog)
    logged = _forbid_refit(stage)
    try:
        added = stage.with_items([new, dull])
    finally:
        for scorer in logged.values():
            del scorer.fit
    assert added is not None
    assert len(stage.catalog) == len(catalog)  # the stage it came from is untouched
    assert added.catalog.ids[-2:] == ["new-star-wars", "new-dull"]
    for name, scorer in logged.items():
        assert added.scorer.scorers[name] is scorer  # the very fitted object, not a refit

    # A full rebuild over the extended catalog, with the same item vectors (so only the imputation can differ).
    text = next(name for name in added.scorer.scorers if added.config.signals[name].kind == "text")
    vectors = added.scorer.scorers[text].item_vectors  # type: ignore[attr-defined]
    assert vectors.shape[0] == len(catalog) + 2
    rebuilt = FusedRetriever.packaged(Catalog([*catalog, new, dull]), interactions, item_vectors=vectors)
    fans, others = _fans(catalog, interactions, star_wars)
    queries = [UserQuery(history=np.asarray(catalog.indices_of(h), dtype=np.int64)) for h in fans[:40] + others[:40]]
    ours, theirs = added.scorer.score_signals(queries), rebuilt.scorer.score_signals(queries)
    assert set(ours) == set(theirs)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-9, err_msg=name)
    imputed = [n for n in ours if added.config.signals[n].kind in IMPUTED_KINDS]
    assert any(np.ptp(ours[n][:, -2:]) > 0 for n in imputed)  # the new items got scores, not a constant
    np.testing.assert_allclose(added.scorer.score(queries), rebuilt.scorer.score(queries), rtol=1e-6, atol=1e-9)

    def share(histories: list[list[str]], item: str) -> float:
        lists = added.retrieve_batch([Request(h, None) for h in histories], k=20)
        return float(np.mean([any(c.id == item for c in found) for found in lists]))

    assert share(fans, "new-star-wars") >= 0.25  # a fan's top 20, at once
    assert share(fans + others[:300], "new-dull") == 0.0


def test_recommender_add_items_ranks_a_new_item_at_once(ml100k: tuple[Catalog, Interactions, FusedRetriever]) -> None:
    catalog, interactions, stage = ml100k
    star_wars, new, _ = new_items(catalog)
    fresh = FusedRetriever(catalog, stage.config, interactions, item_vectors=stage.scorer.scorers["text"].item_vectors)  # type: ignore[attr-defined]
    recommender = Recommender(catalog, retriever=fresh)
    logged = _forbid_refit(fresh)
    assert recommender.add_items([new]) == ["new-star-wars"]
    for scorer in logged.values():
        del scorer.fit
    assert recommender.catalog.get("new-star-wars").title == new.title
    fans, _ = _fans(catalog, interactions, star_wars)
    found = [recommender.recommend(fan[-20:], k=20) for fan in fans[:30]]
    assert any("new-star-wars" in [item.id for item in ranking.items] for ranking in found)
    with pytest.raises(DuplicateItemError):
        recommender.add_items([new])


def test_live_put_adds_a_new_item_without_rebuilding_the_fused_stage(
    ml100k: tuple[Catalog, Interactions, FusedRetriever],
) -> None:
    catalog, interactions, stage = ml100k
    _, new, _ = new_items(catalog)
    vectors = stage.scorer.scorers["text"].item_vectors  # type: ignore[attr-defined]
    builds: list[int] = []

    def build(current: Catalog) -> FusedRetriever:
        builds.append(len(current))
        given = vectors if len(current) == len(catalog) else None
        return FusedRetriever(current, stage.config, interactions, item_vectors=given)

    live = LiveCatalog(catalog, build)
    before = live.snapshot.stage.stage
    assert live.put(new) is True
    assert builds == [len(catalog)]  # the new item joined the stage: no rebuild
    after = live.snapshot.stage.stage
    assert isinstance(after, FusedRetriever) and isinstance(before, FusedRetriever)
    assert after is not before and len(before.catalog) == len(catalog)  # the old snapshot's stage is untouched
    assert after.catalog.ids[-1] == "new-star-wars"
    assert all(after.scorer.scorers[n] is s for n, s in before.scorer.scorers.items() if n != "text")
    replaced = new.model_copy(update={"title": "Star Wars: Special Edition (1997)"})
    assert live.put(replaced) is False
    assert builds == [len(catalog), len(catalog) + 1]  # a changed item's text: the full rebuild, as before


def test_a_fusion_with_transfer_signals_takes_new_items_without_a_refit(
    ml100k: tuple[Catalog, Interactions, FusedRetriever],
) -> None:
    """The mixed-items run's tuned fusion (text, the log signals and the transfer signals, weighted for lists where
    warm and cold items compete): a new item joins it through what each transfer signal learnt and the imputation,
    nothing is fitted again, the Star Wars twin reaches fans' top 20 and an item that reads like nothing popular
    stays out of everyone's."""
    from zsgen.score.config import FusionConfig

    catalog, interactions, packaged = ml100k
    star_wars, new, dull = new_items(catalog)
    config = FusionConfig.load(Path(__file__).parents[2] / "evaluation/configs/fusion/mixed-items-tuned.toml")
    vectors = packaged.scorer.scorers["text"].item_vectors  # type: ignore[attr-defined]
    stage = FusedRetriever(catalog, config, interactions, item_vectors=vectors)
    assert {"text_factors", "neighbour_transfer"} <= {config.signals[name].kind for name in stage.scorer.scorers}
    fitted = dict(stage.scorer.scorers)
    logged = {name: s for name, s in fitted.items() if config.signals[name].kind != "text"}

    def refit(*args: object, **kw: object) -> None:
        raise AssertionError("a fitted signal was refitted")

    for scorer in logged.values():
        scorer.fit = refit  # type: ignore[method-assign]
    try:
        added = stage.with_items([new, dull])
    finally:
        for scorer in logged.values():
            del scorer.fit
    assert added is not None and added.catalog.ids[-2:] == ["new-star-wars", "new-dull"]
    assert all(stage.scorer.scorers[name] is scorer for name, scorer in fitted.items())  # the old stage untouched
    fans, others = _fans(catalog, interactions, star_wars)

    def share(histories: list[list[str]], item: str) -> float:
        lists = added.retrieve_batch([Request(h, None) for h in histories], k=20)
        return float(np.mean([any(c.id == item for c in found) for found in lists]))

    assert share(fans, "new-star-wars") >= 0.25
    assert share(fans + others[:300], "new-dull") == 0.0
