"""OpenAIScoringBackend against a scripted loopback server: the request it sends, how it reads log-probabilities,
floors for labels that did not come back, servers without (or with broken) log-probabilities, the cache.

The same backend against the real vLLM, and its agreement with the local verbalizer, is in tests/llm/
test_vllm_scoring.py.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from zsgen.cache import ResponseCache
from zsgen.catalog import Catalog
from zsgen.errors import BackendError, ConfigError, LogprobsUnavailableError
from zsgen.llm import OpenAIScoringBackend
from zsgen.llm.openai_scoring import label_scores
from zsgen.loaders import load_demo
from zsgen.rerank import RerankConfig, Reranker
from zsgen.testing.servers import Reply, ScriptedServer, completion_body, logprobs_body
from zsgen.types import Candidate, History

MESSAGES = [{"role": "system", "content": "Pick one."}, {"role": "user", "content": "A, B or C?"}]
FAST = {"backoff_initial": 0.01, "backoff_max": 0.02}


def scorer(server: ScriptedServer, **kwargs: Any) -> OpenAIScoringBackend:
    options: dict[str, Any] = {"api_key": "sk-test", "max_retries": 1, "timeout": 10.0, **FAST}
    options.update(kwargs)
    return OpenAIScoringBackend(server.base_url, **options)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


# -- the request and the answer -------------------------------------------------------------------------------------


def test_one_token_request_restricted_to_the_labels_and_scores_renormalised(scripted_server: ScriptedServer) -> None:
    top = [("B", -0.5), ("A", -1.5), ("C", -2.0), ("The", -3.0)]
    scripted_server.script(Reply(body=logprobs_body(top, prompt_tokens=37)))
    with scorer(scripted_server, model="m") as backend:
        scores = backend.label_logprobs(MESSAGES, ["A", "B", "C"])
        assert backend.count_tokens(MESSAGES) == 37  # the server's usage, remembered for these messages
        assert backend.count_tokens([{"role": "user", "content": "never sent"}]) == 0

    body = scripted_server.chat_requests[0].body
    assert body["max_tokens"] == 1 and body["temperature"] == 0.0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["structured_outputs"] == {"choice": ["A", "B", "C"]}
    assert body["messages"] == MESSAGES
    # log_softmax over the three labels of the returned values: "The" takes no part.
    norm = math.log(math.exp(-1.5) + math.exp(-0.5) + math.exp(-2.0))
    assert scores == pytest.approx([-1.5 - norm, -0.5 - norm, -2.0 - norm], abs=1e-12)


def test_without_restriction_no_constraint_is_sent(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(body=logprobs_body([("A", -0.1), ("B", -2.5)])))
    with scorer(scripted_server, model="m", restrict_choice=False, top_logprobs=5) as backend:
        backend.label_logprobs(MESSAGES, ["A", "B"])
    body = scripted_server.chat_requests[0].body
    assert "structured_outputs" not in body and body["top_logprobs"] == 5


def test_yes_probabilities_one_request_per_conversation(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(body=logprobs_body([("Yes", math.log(0.6)), ("No", math.log(0.2))])),
        Reply(body=logprobs_body([("No", math.log(0.9)), ("Yes", math.log(0.05))])),
    )
    conversations = [[{"role": "user", "content": "first?"}], [{"role": "user", "content": "second?"}]]
    with scorer(scripted_server, model="m", concurrency=1) as backend:
        probabilities = backend.yes_probabilities(conversations)
    assert probabilities == pytest.approx([0.75, 0.05 / 0.95], abs=1e-9)
    assert [r.body["structured_outputs"] for r in scripted_server.chat_requests] == [{"choice": ["Yes", "No"]}] * 2


# -- floors ---------------------------------------------------------------------------------------------------------


def test_absent_labels_get_a_floor_below_every_returned_label() -> None:
    top = [("The", -0.2), ("C", -3.0), ("A", -4.0), ("<", -4.5)]
    scores, absent = label_scores(top, ["A", "B", "C", "D"])
    assert absent == ["B", "D"]
    assert scores[1] == scores[3] < scores[0] < scores[2]  # absent ones tie, below every returned label
    assert math.log(sum(math.exp(s) for s in scores)) == pytest.approx(0.0, abs=1e-12)
    # The floor is half the bound on an absent token: no likelier than the least likely returned one (-4.5).
    assert scores[1] - scores[0] == pytest.approx(-4.5 - math.log(2) - (-4.0), abs=1e-12)


def test_the_floor_respects_the_mass_the_returned_tokens_leave() -> None:
    # 0.5 + 0.45 returned: an absent token has at most 0.05, less than the least likely returned token (0.45).
    scores, absent = label_scores([("A", math.log(0.5)), ("B", math.log(0.45))], ["A", "B", "C"])
    assert absent == ["C"]
    assert scores[2] - scores[0] == pytest.approx(math.log(0.025) - math.log(0.5), abs=1e-9)


def test_a_repeated_token_counts_once_at_its_highest_value() -> None:
    scores, _ = label_scores([("A", -1.0), ("A", -1.0), ("B", -2.0)], ["A", "B"])
    assert scores[0] - scores[1] == pytest.approx(1.0)


def test_floored_labels_are_counted_and_logged_once(
    scripted_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted_server.default = Reply(body=logprobs_body([("The", -0.1), ("A", -3.0)]))
    with caplog.at_level(logging.WARNING), scorer(scripted_server, model="m", restrict_choice=False) as backend:
        for _ in range(2):
            scores = backend.label_logprobs(MESSAGES, ["A", "B", "C"])
            assert scores[0] > scores[1] == scores[2]
        assert backend.floored_labels == 4
    assert len([r for r in caplog.records if "got the floor" in r.getMessage()]) == 1


# -- servers without (usable) log-probabilities ---------------------------------------------------------------------


def test_a_server_without_logprobs_is_a_config_error_at_check_time(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(body=completion_body("Yes"))  # `transformers serve` answers, ignoring logprobs
    with scorer(scripted_server, model="m") as backend:
        with pytest.raises(BackendError) as info:
            backend.label_logprobs(MESSAGES, ["A", "B"])
        assert info.value.reason == "no_logprobs"
        with pytest.raises(LogprobsUnavailableError, match="cannot return log-probabilities"):
            backend.check_labels(MESSAGES, ["A", "B"])
    assert issubclass(LogprobsUnavailableError, ConfigError)


def test_the_reranker_reports_a_server_without_logprobs_before_any_user(
    scripted_server: ScriptedServer, catalog: Catalog
) -> None:
    scripted_server.default = Reply(body=completion_body("Yes"))
    config = RerankConfig(method="pointwise", backend="openai", base_url=scripted_server.base_url, max_retries=0)
    reranker = Reranker(config, catalog=catalog, api_key="sk-test")
    with pytest.raises(LogprobsUnavailableError):
        _ = reranker.backend
    assert len(scripted_server.chat_requests) == 1  # one probe, not one request per user


@pytest.mark.parametrize(
    "content",
    [
        [],  # no token entries
        None,
        [{"token": "A"}],  # no logprob
        [{"token": "A", "logprob": "high", "top_logprobs": []}],
        [{"token": 7, "logprob": -1.0, "top_logprobs": []}],
        [{"token": "A", "logprob": -1.0, "top_logprobs": [{"token": "B", "logprob": 2.5}]}],  # a log-probability > 0
        [{"token": "A", "logprob": -1.0, "top_logprobs": [{"token": "B"}]}],
    ],
)
def test_malformed_logprobs_are_a_malformed_response(scripted_server: ScriptedServer, content: Any) -> None:
    scripted_server.script(Reply(body=logprobs_body([("A", -1.0)], content=content)))
    with scorer(scripted_server, model="m") as backend, pytest.raises(BackendError) as info:
        backend.label_logprobs(MESSAGES, ["A", "B"])
    assert info.value.reason == "malformed_response"


def test_malformed_logprobs_make_a_flagged_fallback_for_that_user(
    scripted_server: ScriptedServer, catalog: Catalog
) -> None:
    ids = catalog.ids
    candidates = [Candidate(id=i, score=1.0 - n / 10) for n, i in enumerate(ids[20:25])]
    labels = ["A", "B", "C", "D", "E"]
    good = logprobs_body([(label, -1.0 - n) for n, label in enumerate(reversed(labels))])
    scripted_server.script(Reply(body=good))  # the build-time probe
    scripted_server.script(Reply(body=logprobs_body([("A", -1.0)], content=[{"token": "A"}])))
    scripted_server.script(Reply(body=good))
    config = RerankConfig(
        method="verbalizer", backend="openai", base_url=scripted_server.base_url, candidates=5, max_retries=0
    )
    with Reranker(config, catalog=catalog, api_key="sk-test") as reranker:
        broken = reranker.rerank(History.from_ids(ids[:3]), candidates)
        fine = reranker.rerank(History.from_ids(ids[:3]), candidates)
    assert broken.fallback and broken.fallback_reason == "malformed_response"
    assert broken.item_ids == [c.id for c in candidates]
    assert not fine.fallback and fine.backend == "openai"
    assert fine.item_ids == [c.id for c in reversed(candidates)]  # "E" was the likeliest label
    assert fine.usage.prompt_tokens == 11 and fine.usage.calls == 1


@pytest.mark.parametrize(
    ("status", "rejection"),
    [
        (400, {"error": {"message": "Unrecognized request argument supplied: structured_outputs"}}),  # OpenAI
        (422, {"detail": "Unexpected fields in the request: {'structured_outputs'}"}),  # transformers serve
    ],
)
def test_a_rejected_choice_constraint_is_dropped_once_and_logged(
    scripted_server: ScriptedServer, caplog: pytest.LogCaptureFixture, status: int, rejection: dict[str, Any]
) -> None:
    scripted_server.script(Reply(status=status, body=rejection))
    scripted_server.default = Reply(body=logprobs_body([("B", -0.2), ("A", -1.9)]))
    with caplog.at_level(logging.ERROR), scorer(scripted_server, model="m") as backend:
        first = backend.label_logprobs(MESSAGES, ["A", "B"])
        backend.label_logprobs(MESSAGES, ["A", "B"])
    assert first[1] > first[0]
    sent = [r.body for r in scripted_server.chat_requests]
    assert ["structured_outputs" in b for b in sent] == [True, False, False]
    assert len([r for r in caplog.records if "structured-output constraint" in r.getMessage()]) == 1


def test_a_422_about_something_else_is_not_taken_for_a_rejected_constraint(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(status=422, body={"detail": "messages: field required"}))
    with scorer(scripted_server, model="m") as backend, pytest.raises(BackendError) as info:
        backend.label_logprobs(MESSAGES, ["A", "B"])
    assert info.value.reason == "http_422" and len(scripted_server.chat_requests) == 1


def test_transient_faults_are_retried_and_a_bad_request_is_not(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=503, body={"error": {"message": "busy"}}), Reply(body=logprobs_body([("A", -0.1)]))
    )
    with scorer(scripted_server, model="m") as backend:
        assert len(backend.label_logprobs(MESSAGES, ["A", "B"])) == 2
        assert backend.requests_sent == 2
    scripted_server.script(Reply(status=400, body={"error": {"message": "prompt too long"}}))
    with scorer(scripted_server, model="m", restrict_choice=False) as backend, pytest.raises(BackendError) as info:
        backend.label_logprobs(MESSAGES, ["A", "B"])
    assert info.value.reason == "http_400" and info.value.attempts == 1


# -- the response cache ---------------------------------------------------------------------------------------------


def test_the_cache_answers_a_second_backend_without_a_request(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    scripted_server.script(Reply(body=logprobs_body([("A", -0.3), ("B", -1.4)], prompt_tokens=23)))
    path = tmp_path / "responses.sqlite"
    with scorer(scripted_server, model="m", cache=ResponseCache(path)) as backend:
        first = backend.label_logprobs(MESSAGES, ["A", "B"])
    with scorer(scripted_server, model="m", cache=ResponseCache(path)) as backend:
        again = backend.label_logprobs(MESSAGES, ["A", "B"])
        assert backend.requests_sent == 0 and backend.count_tokens(MESSAGES) == 23
        # Other labels are another request (another constraint): not answered from the first entry.
        scripted_server.script(Reply(body=logprobs_body([("A", -0.3), ("C", -1.0)])))
        backend.label_logprobs(MESSAGES, ["A", "C"])
        assert backend.requests_sent == 1
    assert again == first
    assert len(scripted_server.chat_requests) == 2


def test_bad_settings_are_config_errors(scripted_server: ScriptedServer) -> None:
    with pytest.raises(ConfigError, match="top_logprobs"):
        scorer(scripted_server, top_logprobs=0)
    with scorer(scripted_server, model="m") as backend, pytest.raises(ConfigError, match="distinct"):
        backend.check_labels(MESSAGES, ["A", "A"])
    assert scripted_server.chat_requests == []


@pytest.mark.slow
def test_transformers_serve_cannot_score_and_says_so_at_build(transformers_server: str, catalog: Catalog) -> None:
    """The real ``transformers serve`` answers a ``logprobs`` request without log-probabilities."""
    config = RerankConfig(method="pointwise", backend="openai", base_url=transformers_server, timeout=300.0)
    reranker = Reranker(config, catalog=catalog, api_key="sk-test")
    with pytest.raises(LogprobsUnavailableError, match="cannot return log-probabilities"):
        _ = reranker.backend
    reranker.close()
