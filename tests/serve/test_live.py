"""Retired and runtime items in both first stages: the retired-id exclusion (:class:`RetiredFilter`) is exact, and
the editable catalog (:class:`LiveCatalog`) rebuilds the fused stage with a new item in it and replays its store."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsgen.errors import DataError, UnknownItemError
from zsgen.loaders import load_dataset, load_demo
from zsgen.retrieval.choice import build_first_stage
from zsgen.retrieval.retire import RetiredFilter
from zsgen.serve.items import ItemStore
from zsgen.serve.live import LiveCatalog
from zsgen.types import Item


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    from zsgen.embed import default_encoder

    return default_encoder()  # the user's embedding cache, as the other tests of the real encoder use


def test_retired_items_are_excluded_exactly_from_the_cosine_stage(encoder) -> None:  # type: ignore[no-untyped-def]
    catalog = load_demo().catalog
    stage = build_first_stage(catalog, first_stage="cosine", encoder=encoder)
    history = ["m098", "m002"]
    full = [c.id for c in stage.retrieve(history, k=30)]
    retired = {full[0], full[2], full[5], "m098"}  # a seen item retired too: counted once
    filtered = RetiredFilter(stage, catalog, retired)
    assert [c.id for c in filtered.retrieve(history, k=20)] == [i for i in full if i not in retired][:20]
    assert filtered.available(history) == len(catalog) - 5
    everything = filtered.retrieve(history, k=filtered.available(history))
    assert len(everything) == len(catalog) - 5 and not retired & {c.id for c in everything}
    with pytest.raises(UnknownItemError):
        RetiredFilter(stage, catalog, {"no-such-item"})


@pytest.mark.data
def test_retired_and_new_items_in_the_fused_stage(shared_data: Path, encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dataset = load_dataset(shared_data / "ml-100k")

    def build(catalog):  # type: ignore[no-untyped-def]
        return build_first_stage(catalog, interactions=dataset.interactions, encoder=encoder)

    store = ItemStore(tmp_path / "items.jsonl")
    live = LiveCatalog(dataset.catalog, build, store)
    assert live.snapshot.stage.source == "fusion"
    history = ["50", "181", "172"]  # Star Wars, Return of the Jedi, Empire Strikes Back
    before = [c.id for c in live.snapshot.stage.retrieve(history, k=15)]
    assert live.retire(before[0]) and not live.retire(before[0])  # retiring twice: already retired
    after = [c.id for c in live.snapshot.stage.retrieve(history, k=10)]
    assert after == before[1:11]
    new = Item(id="new-1", title="Star Wars: The Last Holdout", genres=("Action", "Sci-Fi"), description="space war")
    assert live.put(new) is True
    catalog = live.snapshot.catalog
    assert len(catalog) == len(dataset.catalog) + 1
    ranked = [c for c in live.snapshot.stage.retrieve(history, k=live.snapshot.stage.available(history))]
    assert "new-1" in {c.id for c in ranked} and before[0] not in {c.id for c in ranked}
    # A PUT item has no interactions; the fused stage scores it through its warm text neighbours (ColdImputer), so
    # one that reads like Star Wars reaches a Star Wars fan's top 20 at once (733th of 1,679 before that).
    assert "new-1" in [c.id for c in ranked[:20]]
    replayed = LiveCatalog(dataset.catalog, build, ItemStore(store.path))  # a restart
    assert [c.id for c in replayed.snapshot.stage.retrieve(history, k=20)] == [c.id for c in ranked[:20]]


def test_a_damaged_store_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"op": "retire", "id": "m001"}\n{"op": "put", "item": {"id": "x"}}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"items.jsonl:2.*field 'item'.*title"):
        list(ItemStore(path).replay(known=["m001"]))
