"""The whole pipeline with the real packaged models: MiniLM retrieval, SmolLM2 reranking (generation, verbalizer,
pointwise) and a real `transformers serve` driven through the OpenAI backend."""

from __future__ import annotations

import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, EmptyHistoryError, InvalidKError, UnknownItemError
from zsgen.loaders import load_demo, load_demo_user
from zsgen.recommender import Recommender, Request
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieval import FirstStage, FusedRetriever, Retriever
from zsgen.score.config import FusionConfig, SignalConfig
from zsgen.types import History

KNOWN_FALLBACK_REASONS = {"truncated", "unparseable", "empty", "refusal"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


@pytest.fixture(scope="module")
def retriever(catalog: Catalog) -> Retriever:
    from zsgen.embed import default_encoder

    return Retriever(catalog, default_encoder(cache=False))


@pytest.fixture(scope="module")
def plain(catalog: Catalog, retriever: Retriever) -> Recommender:
    return Recommender(catalog, retriever=retriever)


def genres(catalog: Catalog, ids: list[str]) -> list[tuple[str, ...]]:
    return [catalog.get(i).genres for i in ids]


def test_demo_user_gets_science_fiction_not_food(plain: Recommender, catalog: Catalog) -> None:
    user = load_demo_user()
    ranking = plain.recommend(user.history, k=10)
    found = genres(catalog, ranking.item_ids)
    assert sum("Science Fiction" in g for g in found) >= 8
    assert not any("Food" in g for g in found)
    assert not set(ranking.item_ids) & set(user.history)  # seen items excluded
    assert [i.source for i in ranking.items] == ["cosine"] * 10 and not ranking.fallback
    assert "retrieve_s" in ranking.timings


def test_titles_resolve_like_ids(plain: Recommender, catalog: Catalog) -> None:
    user = load_demo_user()
    titles = [catalog.get(i).title for i in user.history]
    assert plain.recommend(titles, k=5).item_ids == plain.recommend(user.history, k=5).item_ids


def test_profile_only_cold_start_user(plain: Recommender, catalog: Catalog) -> None:
    ranking = plain.recommend(profile="documentaries about chefs, street food and baking bread", k=10)
    assert sum("Food" in g for g in genres(catalog, ranking.item_ids)) >= 7


def test_batch_equals_one_by_one(plain: Recommender, catalog: Catalog) -> None:
    requests = [
        Request(history=catalog.ids[:3]),
        Request(profile="cowboys and cattle drives"),
        Request(catalog.ids[5:9]),
    ]
    batch = plain.recommend_batch(requests, k=7)
    single = [plain.recommend(r.history, profile=r.profile, k=7) for r in requests]
    assert [r.item_ids for r in batch] == [r.item_ids for r in single]


def test_user_errors(plain: Recommender, catalog: Catalog) -> None:
    with pytest.raises(EmptyHistoryError):
        plain.recommend([], k=5)
    with pytest.raises(InvalidKError):
        plain.recommend(catalog.ids[:2], k=0)
    with pytest.raises(InvalidKError, match="298"):
        plain.recommend(catalog.ids[:2], k=299)
    with pytest.raises(UnknownItemError, match="Garage Band"):
        plain.recommend(["Garage Bnad"], k=3)


def test_both_first_stages_serve_the_recommender(catalog: Catalog, retriever: Retriever) -> None:
    """The cosine retriever and a fused first stage answer the same protocol: the recommender's rankings are each
    stage's own candidate lists, labelled with its source, for one request type in and out of batches."""
    text_only = FusionConfig(
        signals={"text": SignalConfig(kind="text", params={"user_vector": "mean", "history_length": 100})},
        weights={"text": 1.0},
    )
    fused = FusedRetriever(catalog, text_only, item_vectors=retriever.item_vectors, encoder=retriever.encoder)
    requests = [
        Request(load_demo_user().history),
        Request(profile="cowboys and cattle drives"),
        Request(catalog.ids[5:9], "a heist in space"),
    ]
    found: dict[str, list[list[str]]] = {}
    for stage in (retriever, fused):
        assert isinstance(stage, FirstStage)
        batch = Recommender(catalog, retriever=stage).recommend_batch(requests, k=8)
        for request, ranking in zip(requests, batch, strict=True):
            assert ranking.item_ids == [c.id for c in stage.retrieve(request.history, request.profile, k=8)]
            assert {item.source for item in ranking.items} == {stage.source}
            assert not set(ranking.item_ids) & set(request.item_keys)
        found[stage.source] = [r.item_ids for r in batch]
    # a fusion of text cosine alone is a monotone transform of it: the same items (the same user vectors)
    assert [set(ids) for ids in found["fusion"]] == [set(ids) for ids in found["cosine"]]


def test_cosine_options_configure_the_retriever_the_recommender_builds(catalog: Catalog, retriever: Retriever) -> None:
    built = Recommender(catalog, encoder=retriever.encoder, user_vector="last", history_length=2)
    assert isinstance(built.retriever, Retriever)
    same = Retriever(
        catalog, retriever.encoder, item_vectors=retriever.item_vectors, user_vector="last", history_length=2
    )
    history = load_demo_user().history
    assert built.recommend(history, k=6).item_ids == [c.id for c in same.retrieve(history, k=6)]
    assert (
        built.recommend(history, k=6).item_ids
        != Recommender(catalog, retriever=retriever).recommend(history, k=6).item_ids
    )
    # with a first stage of one's own they cannot be passed on, so they are refused rather than dropped
    with pytest.raises(ConfigError, match=r"^user_vector: these configure .* give them to that Retriever"):
        Recommender(catalog, retriever=retriever, user_vector="last")
    with pytest.raises(ConfigError, match="encoder, history_length"):
        Recommender(catalog, retriever=retriever, encoder=retriever.encoder, history_length=2)
    with pytest.raises(ConfigError, match="first stage"):
        Recommender(catalog, retriever=object())  # type: ignore[arg-type]


def _reranked(catalog: Catalog, retriever: Retriever, config: RerankConfig, k: int = 5) -> tuple[list[str], object]:
    rec = Recommender(catalog, retriever=retriever, reranker=Reranker(config, catalog=catalog))
    user = load_demo_user()
    pool = [c.id for c in retriever.retrieve(History.from_ids(user.history), k=config.candidates)]
    return pool, rec.recommend(user.history, k=k)


@pytest.mark.slow
def test_local_generation_rerank_is_a_permutation_of_the_pool(catalog: Catalog, retriever: Retriever) -> None:
    config = RerankConfig(method="listwise", backend="local", candidates=6, max_tokens=64)
    pool, ranking = _reranked(catalog, retriever, config)
    assert set(ranking.item_ids) <= set(pool) and len(ranking.item_ids) == 5
    assert ranking.usage.calls == 1  # one generation, whether or not its answer was usable
    if ranking.fallback:
        assert ranking.fallback_reason in KNOWN_FALLBACK_REASONS and ranking.raw_text
        assert ranking.item_ids == pool[:5]
    else:
        assert ranking.raw_text and "llm" in {i.source for i in ranking.items}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["verbalizer", "pointwise"])
def test_verbalizer_methods_never_need_parsing(catalog: Catalog, retriever: Retriever, method: str) -> None:
    config = RerankConfig(method=method, backend="verbalizer", candidates=8)  # type: ignore[arg-type]
    pool, ranking = _reranked(catalog, retriever, config)
    assert not ranking.fallback and ranking.parse_status == "ok"
    assert set(ranking.item_ids) <= set(pool)
    assert {i.source for i in ranking.items} == {"llm"}
    scores = [i.score for i in ranking.items]
    assert scores == sorted(scores, reverse=True)
    assert ranking.usage.prompt_tokens > 0


@pytest.mark.slow
def test_openai_backend_against_real_transformers_serve(
    catalog: Catalog, retriever: Retriever, transformers_server: str
) -> None:
    config = RerankConfig(
        method="listwise", backend="openai", base_url=transformers_server, candidates=6, max_tokens=64, timeout=600
    )  # generous: a 2-core machine busy with other work must not turn a slow answer into a timeout fallback
    pool, ranking = _reranked(catalog, retriever, config)
    assert set(ranking.item_ids) <= set(pool) and len(ranking.item_ids) == 5
    assert ranking.model  # discovered from /v1/models
    assert ranking.usage.prompt_tokens > 0
    if ranking.fallback:
        assert ranking.fallback_reason in KNOWN_FALLBACK_REASONS
    else:
        assert "llm" in {i.source for i in ranking.items}
