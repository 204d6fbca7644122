"""OpenAIChatBackend against real loopback servers: a scripted one for faults, ``transformers serve`` end to end."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from zsgen.cache import ResponseCache, request_key
from zsgen.embed.openai_compat import OpenAIEmbeddingEncoder
from zsgen.errors import BackendError, ConfigError, EncoderError
from zsgen.llm import Completion, OpenAIChatBackend
from zsgen.llm.openai_client import parse_retry_after
from zsgen.testing.servers import Reply, ScriptedServer, completion_body, embedding_body

MESSAGES = [{"role": "system", "content": "Rank the movies."}, {"role": "user", "content": "(A) Heat (B) Fargo"}]
SCHEMA: dict[str, Any] = {
    "title": "Ranking",
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "string"}}},
    "required": ["ranking"],
    "additionalProperties": False,
}
# Much shorter than any Retry-After used below, so a wait of >= 1 s can only come from the header.
FAST = {"backoff_initial": 0.01, "backoff_max": 0.02}


def backend(server: ScriptedServer, **kwargs: Any) -> OpenAIChatBackend:
    options: dict[str, Any] = {"api_key": "sk-test", "max_retries": 3, "timeout": 10.0, **FAST}
    options.update(kwargs)
    return OpenAIChatBackend(server.base_url, **options)


def fail(server: ScriptedServer, **kwargs: Any) -> BackendError:
    with pytest.raises(BackendError) as info:
        backend(server, **kwargs).chat(MESSAGES)
    return info.value


# -- happy path and request shape -----------------------------------------------------------------------------------


def test_model_is_discovered_once_and_completion_is_read(scripted_server: ScriptedServer) -> None:
    scripted_server.models = ("first-model", "second-model")
    scripted_server.script(
        Reply(body=completion_body("B, A", model="first-model", prompt_tokens=21, completion_tokens=4)),
        Reply(body=completion_body("A, B", model="first-model")),
    )
    client = backend(scripted_server)
    first = client.chat(MESSAGES)
    second = client.chat(MESSAGES, max_tokens=7)

    assert first == Completion(
        text="B, A",
        finish_reason="stop",
        usage={"prompt_tokens": 21, "completion_tokens": 4, "calls": 1},
        model="first-model",
    )
    assert second.text == "A, B"
    assert client.model == "first-model"
    model_lookups = [r for r in scripted_server.requests if r.path.endswith("/models")]
    assert len(model_lookups) == 1
    sent = [r.body for r in scripted_server.chat_requests]
    assert [b["model"] for b in sent] == ["first-model", "first-model"]
    assert sent[0]["messages"] == MESSAGES
    assert sent[0]["temperature"] == 0
    assert [b["max_tokens"] for b in sent] == [256, 7]


def test_explicit_model_skips_discovery(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(body=completion_body("x")))
    backend(scripted_server, model="chosen").chat(MESSAGES)
    assert [r.path for r in scripted_server.requests] == ["/v1/chat/completions"]
    assert scripted_server.chat_requests[0].body["model"] == "chosen"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("none", None),
        ("json_object", {"type": "json_object", "schema": SCHEMA}),  # llama.cpp reads the schema from here
        ("json_schema", {"type": "json_schema", "json_schema": {"name": "Ranking", "schema": SCHEMA, "strict": True}}),
    ],
)
def test_structured_mode_sets_response_format(scripted_server: ScriptedServer, mode: str, expected: Any) -> None:
    scripted_server.script(Reply(body=completion_body('{"ranking": ["A"]}')))
    backend(scripted_server, model="m", structured=mode).chat(MESSAGES, json_schema=SCHEMA)
    assert scripted_server.chat_requests[0].body.get("response_format") == expected


def test_no_response_format_without_a_schema(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(body=completion_body("A")))
    backend(scripted_server, model="m", structured="json_schema").chat(MESSAGES)
    assert "response_format" not in scripted_server.chat_requests[0].body


def test_choices_go_as_vllm_structured_outputs_when_enabled(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(body=completion_body("B")), Reply(body=completion_body("A")))
    backend(scripted_server, model="m", structured="json_schema", structured_choice=True).chat(
        MESSAGES, json_schema=SCHEMA, choices=["A", "B"]
    )
    backend(scripted_server, model="m", structured="json_schema").chat(MESSAGES, json_schema=SCHEMA, choices=["A", "B"])
    with_choice, without = (r.body for r in scripted_server.chat_requests)
    assert with_choice["structured_outputs"] == {"choice": ["A", "B"]}
    assert "response_format" not in with_choice  # one constraint per request
    assert "structured_outputs" not in without  # not enabled: the schema carries the constraint
    assert without["response_format"]["type"] == "json_schema"


def test_the_constraint_is_part_of_the_cache_key(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    other = {**SCHEMA, "properties": {"ranking": {"type": "array", "items": {"enum": ["A"]}}}}
    scripted_server.script(*(Reply(body=completion_body(t)) for t in ("one", "two", "three", "four")))
    cache = ResponseCache(tmp_path / "responses.sqlite")
    client = backend(scripted_server, model="m", structured="json_schema", structured_choice=True, cache=cache)
    texts = [
        client.chat(MESSAGES, json_schema=SCHEMA).text,
        client.chat(MESSAGES, json_schema=other).text,
        client.chat(MESSAGES, json_schema=SCHEMA, choices=["A", "B"]).text,
        client.chat(MESSAGES, json_schema=SCHEMA, choices=["B", "A"]).text,
        client.chat(MESSAGES, json_schema=SCHEMA).text,  # the first request again: from the cache
    ]
    assert texts == ["one", "two", "three", "four", "one"]
    assert len(scripted_server.chat_requests) == 4


VLLM_REJECTION = {
    "error": {
        "message": 'Grammar error: Unimplemented keys: ["uniqueItems"]',
        "type": "BadRequestError",
        "code": 400,
    }
}


def test_a_rejected_schema_is_reported_once_and_not_sent_again(
    scripted_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted_server.script(Reply(status=400, body=VLLM_REJECTION))
    client = backend(scripted_server, model="m", structured="json_schema")
    other_labels = {**SCHEMA, "properties": {"ranking": {"type": "array", "items": {"enum": ["C", "D"]}}}}
    same_shape = {**SCHEMA, "properties": {"ranking": {"type": "array", "items": {"enum": ["A", "B"]}}}}
    with caplog.at_level(logging.ERROR, logger="zsgen"):
        with pytest.raises(BackendError) as first:
            client.chat(MESSAGES, json_schema=same_shape)
        with pytest.raises(BackendError) as second:
            client.chat(MESSAGES, json_schema=other_labels)  # same shape, other labels: not asked again
    assert first.value.reason == second.value.reason == "schema_rejected"
    assert "Unimplemented keys" in str(first.value) and "Unimplemented keys" in str(second.value)
    assert len(scripted_server.chat_requests) == 1
    rejections = [r for r in caplog.records if "rejected the structured-output constraint" in r.getMessage()]
    assert len(rejections) == 1


def test_a_rejected_schema_can_be_dropped_instead(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=400, body=VLLM_REJECTION),
        Reply(body=completion_body('{"ranking": ["B", "A"]}')),
        Reply(body=completion_body('{"ranking": ["A", "B"]}')),
    )
    client = backend(scripted_server, model="m", structured="json_schema", on_schema_rejected="unconstrained")
    first = client.chat(MESSAGES, json_schema=SCHEMA)
    second = client.chat(MESSAGES, json_schema=SCHEMA)
    assert (first.text, first.unconstrained) == ('{"ranking": ["B", "A"]}', True)
    assert (second.text, second.unconstrained) == ('{"ranking": ["A", "B"]}', True)
    sent = [r.body for r in scripted_server.chat_requests]
    assert "response_format" in sent[0]
    assert ["response_format" in b for b in sent[1:]] == [False, False]


def test_a_400_about_something_else_is_not_a_schema_rejection(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=400, body={"error": {"message": "This model's maximum context length is 2048 tokens"}}),
        Reply(body=completion_body("A")),
    )
    client = backend(scripted_server, model="m", structured="json_schema")
    with pytest.raises(BackendError) as info:
        client.chat(MESSAGES, json_schema=SCHEMA)
    assert info.value.reason == "http_400"
    assert client.chat(MESSAGES, json_schema=SCHEMA).text == "A"  # the constraint is still sent
    assert "response_format" in scripted_server.chat_requests[1].body


def test_extra_body_is_sent(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(body=completion_body("A")))
    backend(scripted_server, model="m", extra_body={"top_k": 1}).chat(MESSAGES)
    assert scripted_server.chat_requests[0].body["top_k"] == 1


# -- retries ---------------------------------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=429, headers={"Retry-After": "1"}, body={"error": {"message": "slow down"}}),
        Reply(body=completion_body("done")),
    )
    assert backend(scripted_server, model="m").chat(MESSAGES).text == "done"
    first, second = scripted_server.chat_requests
    assert second.received_at - first.received_at >= 0.9  # the header, not the 10-20 ms backoff, set the wait


def test_retry_after_is_capped(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=503, headers={"Retry-After": "3600"}, body={"error": {"message": "busy"}}),
        Reply(body=completion_body("done")),
    )
    client = backend(scripted_server, model="m", retry_after_cap=0.05)
    # A bound that turns an uncapped 1-hour wait into a failure instead of a hang.
    completion = asyncio.run(asyncio.wait_for(client.achat(MESSAGES), timeout=20))
    assert completion.text == "done"
    assert len(scripted_server.chat_requests) == 2


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503])
def test_transient_statuses_are_retried(scripted_server: ScriptedServer, status: int) -> None:
    scripted_server.script(
        Reply(status=status, body={"error": {"message": "transient"}}), Reply(body=completion_body("ok"))
    )
    assert backend(scripted_server, model="m").chat(MESSAGES).text == "ok"
    assert len(scripted_server.chat_requests) == 2


def test_500_500_then_success(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=500, body={"error": {"message": "boom"}}),
        Reply(status=500, body={"error": {"message": "boom"}}),
        Reply(body=completion_body("third time")),
    )
    assert backend(scripted_server, model="m", max_retries=3).chat(MESSAGES).text == "third time"
    assert len(scripted_server.chat_requests) == 3


def test_persistent_500_gives_server_error_after_bounded_attempts(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(status=500, body={"error": {"message": "down"}})
    error = fail(scripted_server, model="m", max_retries=2)
    assert error.reason == "server_error"
    assert error.attempts == 3
    assert len(scripted_server.chat_requests) == 3


def test_429_forever_is_rate_limited(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(status=429, body={"error": {"message": "quota"}})
    error = fail(scripted_server, model="m", max_retries=1)
    assert (error.reason, error.attempts, len(scripted_server.chat_requests)) == ("rate_limited", 2, 2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(scripted_server: ScriptedServer, status: int) -> None:
    scripted_server.default = Reply(status=status, body={"error": {"message": "bad request"}})
    error = fail(scripted_server, model="m")
    assert error.reason == f"http_{status}"
    assert error.attempts == 1
    assert len(scripted_server.chat_requests) == 1


def test_stall_past_timeout_is_a_timeout(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(delay=60, body=completion_body("too late"))
    client = backend(scripted_server, model="m", timeout=0.3, max_retries=1)
    with pytest.raises(BackendError) as info:
        asyncio.run(asyncio.wait_for(client.achat(MESSAGES), timeout=20))
    assert info.value.reason == "timeout"
    assert info.value.attempts == 2
    assert len(scripted_server.chat_requests) == 2


def test_dropped_connection_is_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(drop=True), Reply(body=completion_body("ok")))
    assert backend(scripted_server, model="m").chat(MESSAGES).text == "ok"
    assert len(scripted_server.chat_requests) == 2


def test_nothing_listening_is_a_connection_error() -> None:
    with ScriptedServer() as server:
        url = server.base_url
    client = OpenAIChatBackend(url, model="m", api_key="k", max_retries=1, timeout=5, **FAST)
    with pytest.raises(BackendError) as info:
        client.chat(MESSAGES)
    assert (info.value.reason, info.value.attempts) == ("connection", 2)


# -- unusable answers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b'{"choices": [{"message": '),
        Reply(body=b"<html>gateway</html>", content_type="text/html"),
        Reply(body={"error": "no completion here"}),
    ],
    ids=["truncated-json", "html", "wrong-shape"],
)
def test_malformed_answers_are_not_retried(scripted_server: ScriptedServer, reply: Reply) -> None:
    scripted_server.default = reply
    error = fail(scripted_server, model="m")
    assert error.reason == "malformed_response"
    assert len(scripted_server.chat_requests) == 1


def test_cut_off_answer_is_returned_with_length_finish_reason(scripted_server: ScriptedServer) -> None:
    scripted_server.script(Reply(body=completion_body("C, A, B, D,", finish_reason="length")))
    completion = backend(scripted_server, model="m").chat(MESSAGES, max_tokens=5)
    assert completion.finish_reason == "length"
    assert completion.text == "C, A, B, D,"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (completion_body("", finish_reason="length"), "truncated"),
        (completion_body(choices=False), "empty"),
        (completion_body(None), "empty"),
        (completion_body("   "), "empty"),
        (completion_body(None, refusal="I can't help with that."), "refusal"),
        (completion_body(None, finish_reason="content_filter"), "refusal"),
    ],
    ids=["length-no-text", "no-choices", "null-content", "blank", "refusal", "content-filter"],
)
def test_unusable_answers_have_reasons(scripted_server: ScriptedServer, body: dict[str, Any], reason: str) -> None:
    scripted_server.default = Reply(body=body)
    error = fail(scripted_server, model="m")
    assert error.reason == reason
    assert len(scripted_server.chat_requests) == 1


def test_empty_model_list_is_an_error(scripted_server: ScriptedServer) -> None:
    scripted_server.models = ()
    error = fail(scripted_server)
    assert error.reason == "empty"
    assert scripted_server.chat_requests == []


NESTED = b"[" * 50_000 + b"]" * 50_000  # valid JSON, nested deeper than the decoder's stack: RecursionError


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(body=b"<html>models</html>", content_type="text/html"), "malformed_response"),
        (Reply(body=b"null"), "malformed_response"),
        (Reply(body=NESTED), "malformed_response"),
        (Reply(body={"object": "list", "data": "nope"}), "malformed_response"),
        (Reply(body={"object": "list", "data": [{"id": 5}, {"object": "model"}, "x"]}), "empty"),
    ],
    ids=["html", "null", "nested", "data-not-a-list", "no-string-ids"],
)
def test_malformed_model_lists_are_backend_errors(scripted_server: ScriptedServer, reply: Reply, reason: str) -> None:
    # Regression (issue 12 fault benchmark): the SDK's page model let these escape as JSONDecodeError,
    # AttributeError or RecursionError, so chat_many lost the whole batch and the reranker said "backend_exception".
    scripted_server.models_reply = reply
    results = backend(scripted_server).chat_many([MESSAGES, MESSAGES])
    assert [(type(r), getattr(r, "reason", None)) for r in results] == [(BackendError, reason)] * 2
    assert scripted_server.chat_requests == []


def test_deeply_nested_answer_is_malformed_and_kept_in_place(scripted_server: ScriptedServer) -> None:
    # Regression (issue 12 fault benchmark): RecursionError escaped _read and took chat_many's batch with it.
    scripted_server.script(Reply(body=completion_body("one")), Reply(body=NESTED))
    results = backend(scripted_server, model="m", concurrency=1).chat_many([MESSAGES, MESSAGES])
    assert isinstance(results[0], Completion) and results[0].text == "one"
    assert isinstance(results[1], BackendError) and results[1].reason == "malformed_response"
    assert len(scripted_server.chat_requests) == 2


def test_requests_waiting_on_a_failed_model_lookup_share_its_failure(scripted_server: ScriptedServer) -> None:
    # Regression (issue 12 fault benchmark): each waiting request retried the lookup itself, one after another behind
    # the lock, so 10,000 users against a server whose model list was down took hours to fall back.
    scripted_server.models_reply = Reply(status=500, body={"error": {"message": "down"}})
    client = backend(scripted_server, max_retries=2)
    results = client.chat_many([MESSAGES] * 8)
    assert [(type(r), getattr(r, "reason", None)) for r in results] == [(BackendError, "server_error")] * 8
    model_lookups = [r for r in scripted_server.requests if r.path.endswith("/models")]
    assert len(model_lookups) == 3  # one lookup and its two retries, for all eight
    # A request that comes just after the failure shares it too (users of a batch enter a few at a time) ...
    client.discovery_retry_after = 3600.0
    assert isinstance(client.chat_many([MESSAGES])[0], BackendError)
    assert len([r for r in scripted_server.requests if r.path.endswith("/models")]) == 3
    # ... and one that comes after discovery_retry_after asks again: a server that recovered is used.
    client.discovery_retry_after = 0.0
    scripted_server.models_reply = None
    scripted_server.script(Reply(body=completion_body("back")))
    assert client.chat(MESSAGES).text == "back"
    assert len([r for r in scripted_server.requests if r.path.endswith("/models")]) == 4


# -- concurrency and event loops -------------------------------------------------------------------------------------


def test_concurrency_is_bounded_and_order_kept(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(delay=0.2, body=completion_body("same"))
    client = backend(scripted_server, model="m", concurrency=3)
    conversations = [[{"role": "user", "content": f"user {i}"}] for i in range(9)]
    results = client.chat_many(conversations)
    assert all(isinstance(r, Completion) and r.text == "same" for r in results)
    assert scripted_server.max_in_flight == 3
    sent = [r.body["messages"][0]["content"] for r in scripted_server.chat_requests]
    assert sorted(sent) == sorted(f"user {i}" for i in range(9))


def test_many_returns_errors_in_place(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(body=completion_body("one")),
        Reply(status=400, body={"error": {"message": "bad"}}),
        Reply(body=completion_body("three")),
    )
    results = backend(scripted_server, model="m", concurrency=1).chat_many([MESSAGES, MESSAGES, MESSAGES])
    assert isinstance(results[0], Completion) and results[0].text == "one"
    assert isinstance(results[1], BackendError) and results[1].reason == "http_400"
    assert isinstance(results[2], Completion) and results[2].text == "three"


def test_sync_chat_works_inside_a_running_loop_and_across_loops(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(body=completion_body("ok"))
    client = backend(scripted_server)  # model discovered on whichever loop asks first

    async def inside_loop() -> list[str]:
        blocking = client.chat(MESSAGES)  # must not deadlock on the loop this thread runs
        awaited = await client.achat(MESSAGES)
        await client.aclose()
        return [blocking.text, awaited.text]

    assert asyncio.run(inside_loop()) == ["ok", "ok"]
    assert asyncio.run(client.achat(MESSAGES)).text == "ok"  # any loop reaches the one client on the portal loop
    assert client.chat(MESSAGES).text == "ok"
    assert len([r for r in scripted_server.requests if r.path.endswith("/models")]) == 1
    assert clients_for(scripted_server) == 1
    client.close()
    assert scripted_server.wait_for_open_connections(0) == 0


def clients_for(server: ScriptedServer) -> int:
    """Live ``AsyncOpenAI`` objects pointed at ``server`` (its port is unique to this test)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is openai.AsyncOpenAI and f":{server.port}/" in str(o.base_url))


def test_sync_calls_share_one_client_and_connection_until_closed(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(body=completion_body("ok"))
    client = backend(scripted_server, model="m")
    for _ in range(50):
        assert client.chat(MESSAGES).text == "ok"
    assert scripted_server.connections_accepted == 1  # keep-alive: one connection served all 50 calls
    assert clients_for(scripted_server) == 1
    client.close()
    assert scripted_server.wait_for_open_connections(0) == 0
    assert clients_for(scripted_server) == 0
    client.close()  # closing twice is harmless
    assert client.chat(MESSAGES).text == "ok"  # and a closed backend opens a new client when used again
    client.close()


def test_context_managers_close_the_client(scripted_server: ScriptedServer) -> None:
    scripted_server.default = Reply(body=completion_body("ok"))
    with backend(scripted_server, model="m") as client:
        client.chat(MESSAGES)
    assert scripted_server.wait_for_open_connections(0) == 0

    async def use() -> None:
        async with backend(scripted_server, model="m") as aclient:
            await aclient.achat(MESSAGES)

    asyncio.run(use())
    assert scripted_server.wait_for_open_connections(0) == 0
    assert clients_for(scripted_server) == 0


# -- embeddings share the retry policy ---------------------------------------------------------------------------------


def embedder(server: ScriptedServer, **kwargs: Any) -> OpenAIEmbeddingEncoder:
    options: dict[str, Any] = {"api_key": "sk-test", "max_retries": 2, **FAST}
    options.update(kwargs)
    return OpenAIEmbeddingEncoder("scripted-embed", base_url=server.base_url, **options)


def test_embeddings_wait_as_long_as_retry_after_says(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=429, headers={"Retry-After": "1"}, body={"error": {"message": "slow down"}}),
        Reply(body=embedding_body([[3.0, 4.0]])),
    )
    with embedder(scripted_server) as encoder:
        vectors = encoder.encode(["a"])
    first, second = scripted_server.embedding_requests
    assert second.received_at - first.received_at >= 0.9  # the backoff alone would be ~0.01 s
    assert vectors.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]


def test_embeddings_retry_408_but_not_422(scripted_server: ScriptedServer) -> None:
    scripted_server.script(
        Reply(status=408, body={"error": {"message": "request timeout"}}),
        Reply(body=embedding_body([[1.0, 0.0]])),
        Reply(status=422, body={"error": {"message": "unprocessable"}}),
    )
    encoder = embedder(scripted_server)
    assert encoder.encode(["a"]).tolist() == [[1.0, 0.0]]
    assert len(scripted_server.embedding_requests) == 2
    with pytest.raises(EncoderError, match="HTTP 422"):
        encoder.encode(["b"])
    assert len(scripted_server.embedding_requests) == 3  # no retry of a request that is wrong
    encoder.close()


def test_embeddings_give_up_after_bounded_attempts(scripted_server: ScriptedServer) -> None:
    scripted_server.script(*[Reply(status=503, body={"error": {"message": "down"}})] * 3)
    with pytest.raises(EncoderError, match=r"HTTP 503.*after 3 attempt"):
        embedder(scripted_server).encode(["a"])
    assert scripted_server.pending == 0


# -- keys and cache --------------------------------------------------------------------------------------------------


def test_api_key_is_sent_but_never_logged_cached_or_shown(
    scripted_server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-SECRET-4f9a2c"
    scripted_server.script(
        Reply(status=500, body={"error": {"message": "flaky"}}),
        Reply(body=completion_body("ok")),
        Reply(status=401, body={"error": {"message": "bad key"}}),
    )
    cache = ResponseCache(tmp_path / "responses.sqlite")
    client = OpenAIChatBackend(scripted_server.base_url, api_key=secret, cache=cache, **FAST)
    with caplog.at_level(logging.DEBUG):
        client.chat(MESSAGES)
        with pytest.raises(BackendError) as info:
            client.chat([{"role": "user", "content": "another"}])
    cache.close()

    assert scripted_server.chat_requests[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text
    assert "retrying" in caplog.text  # the retry was logged, without the key
    assert secret not in repr(client)
    assert secret not in str(info.value)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"ok" in stored
    assert secret.encode() not in stored


def test_key_from_environment_and_missing_key(scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    scripted_server.script(Reply(body=completion_body("ok")))
    OpenAIChatBackend(scripted_server.base_url, model="m").chat(MESSAGES)
    assert scripted_server.chat_requests[0].headers["authorization"] == "Bearer sk-from-env"

    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError):
        OpenAIChatBackend(model="gpt-x")  # the hosted API needs a key
    OpenAIChatBackend(scripted_server.base_url, model="m")  # a local server gets a placeholder


def test_cache_answers_repeated_requests(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    scripted_server.script(Reply(body=completion_body("first")), Reply(body=completion_body("second")))
    cache = ResponseCache(tmp_path / "c.sqlite")
    client = backend(scripted_server, model="m", cache=cache)
    fresh = client.chat(MESSAGES)
    again = client.chat(MESSAGES)
    other = client.chat(MESSAGES, max_tokens=9)  # a different request is not served from the cache

    assert (fresh.text, fresh.cached) == ("first", False)
    assert (again.text, again.cached) == ("first", True)
    assert again.usage == fresh.usage
    assert (other.text, other.cached) == ("second", False)
    assert len(scripted_server.chat_requests) == 2


def test_failures_are_not_cached(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    scripted_server.script(Reply(status=400, body={"error": {"message": "bad"}}), Reply(body=completion_body("ok")))
    cache = ResponseCache(tmp_path / "c.sqlite")
    client = backend(scripted_server, model="m", cache=cache)
    with pytest.raises(BackendError):
        client.chat(MESSAGES)
    assert client.chat(MESSAGES).text == "ok"
    assert len(cache) == 1


# -- Retry-After parsing ---------------------------------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    in_five = format_datetime(now + timedelta(seconds=5), usegmt=True)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": in_five}, now=now.timestamp()) == pytest.approx(5.0)
    assert parse_retry_after({"retry-after": in_five}, now=now.timestamp() + 60) == 0.0  # a date in the past
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# -- end to end ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_transformers_serve_end_to_end(transformers_server: str, local_model_dir: Path) -> None:
    client = OpenAIChatBackend(transformers_server, max_retries=1, timeout=600)  # generous: load must not decide it
    completion = client.chat([{"role": "user", "content": "Name one fruit."}], max_tokens=12)
    assert client.model == str(local_model_dir)
    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.finish_reason in {"stop", "length"}


def test_cache_keys_name_the_server_so_two_servers_never_share_answers(tmp_path: Path) -> None:
    # Two servers answering for the same model id: the second one used to receive no request, its users got the
    # first server's answers.
    cache = ResponseCache(tmp_path / "shared.sqlite")
    with ScriptedServer() as first, ScriptedServer() as second:
        first.script(Reply(body=completion_body("from the first server")))
        second.script(Reply(body=completion_body("from the second server")))
        assert backend(first, model="same-id", cache=cache).chat(MESSAGES).text == "from the first server"
        assert backend(second, model="same-id", cache=cache).chat(MESSAGES).text == "from the second server"
        again = backend(second, model="same-id", cache=cache).chat(MESSAGES)
        assert (again.text, again.cached) == ("from the second server", True)
        assert len(first.chat_requests) == len(second.chat_requests) == 1
    assert len(cache) == 2


def test_cache_base_url_drops_credentials_query_and_case() -> None:
    from zsgen.llm.openai_chat import cache_base_url

    assert cache_base_url("http://user:s3cret@Host.Example:8000/v1/?token=abc") == "http://host.example:8000/v1"
    assert cache_base_url("HTTP://host.example:8000/v1") == "http://host.example:8000/v1"
    assert cache_base_url(None) == "https://api.openai.com/v1"
    with pytest.raises(ConfigError, match="credentials"):
        request_key(backend="openai", base_url="http://user:s3cret@host/v1", model="m")
    assert "s3cret" not in cache_base_url("http://:s3cret@[::1]:8000/v1") and "[::1]:8000" in cache_base_url(
        "http://:s3cret@[::1]:8000/v1"
    )


def test_a_cache_that_fails_after_opening_is_a_miss_not_a_failed_request(
    scripted_server: ScriptedServer, tmp_path: Path
) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.db.connection().execute("DROP TABLE responses")  # reads and writes now fail with sqlite3 errors
    scripted_server.script(Reply(body=completion_body("ok")), Reply(body=completion_body("ok again")))
    client = backend(scripted_server, model="m", cache=cache)
    assert client.chat(MESSAGES).text == "ok"
    assert client.chat(MESSAGES).text == "ok again"  # not cached, but answered
