"""``examples/serve-demo-cpu.toml``, the README's serving recipe that needs no LLM server, answers end to end with the
packaged SmolLM2 reranking (source ``llm``, parse status ``ok``), as the README's sample response shows."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from zsgen.serve.app import create_app
from zsgen.serve.config import load_serve_config
from zsgen.testing.serve_app import running

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve-demo-cpu.toml"


def test_the_cpu_example_config_loads() -> None:
    config = load_serve_config(EXAMPLE)
    assert config.rerank is not None and config.rerank.method == "pointwise" and config.rerank.backend == "verbalizer"
    assert config.dataset.path.endswith("demo_catalog.jsonl") and config.deadline_s >= 60


@pytest.mark.slow
def test_the_cpu_example_reranks_over_http() -> None:
    config = load_serve_config(EXAMPLE)
    body = {"history": ["Halcyon Drift", "Copernicus Station", "The Quiet Orbit"], "k": 5}
    with running(create_app(config)) as url:
        answer = httpx2.post(f"{url}/v1/recommendations", json=body, timeout=config.deadline_s + 30).json()
    assert answer["fallback"] is False and answer["parse_status"] == "ok", answer.get("fallback_reason")
    assert [item["source"] for item in answer["items"]] == ["llm"] * 5
    assert answer["usage"]["calls"] == 1 and answer["method"] == "pointwise"
