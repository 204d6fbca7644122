"""Property-based tests of the service against its own OpenAPI schema (schemathesis): whatever schemathesis sends,
valid or not, the service answers no 5xx, with the statuses, content types and bodies the schema declares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from zsgen.loaders import demo_catalog_path
from zsgen.serve.app import create_app
from zsgen.serve.auth import Token
from zsgen.serve.config import config_from_dict
from zsgen.serve.service import build_state

TOKEN = "schema-test-token"
LIMITS = {
    "dataset": {"path": str(demo_catalog_path())},
    "max_body_bytes": 50_000_000,
    "allowed_hosts": ["testserver", "localhost"],  # the names schemathesis' in-process client sends as Host
}  # 413 is no schema rejection: the schema's own caps answer first
# The schema is read from an app that has loaded nothing yet (cheap at collection); the fixture below loads the models
# once, into this very app, before the first case runs.
APP = create_app(config_from_dict(LIMITS))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("serve-schema")
    paths = {"embedding_cache": str(folder / "emb.sqlite"), "store": str(folder / "items.jsonl")}
    state = build_state(config_from_dict({**LIMITS, **paths}))
    state.token = Token(TOKEN)  # with a token, schemathesis also checks that requests without it are refused
    APP.state.zsgen = state
    yield
    del APP.state.zsgen


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_response_matches_the_schema(case: schemathesis.Case) -> None:
    # Every check but positive_data_acceptance: a schema-valid request may still be the caller's mistake (an item the
    # catalog does not have, an empty user, k above the items left), which is a 422 by design.
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=[positive_data_acceptance])
