"""The playground tests' service: the app ``zsgen serve`` builds, from a real serve config (the demo catalog with a
small invented interaction log, written to files; the packaged MiniLM cosine first stage; a ``[rerank]`` table naming
a scripted LLM on loopback that ranks by what the prompt asks; a ``[playground]`` table), served by a real uvicorn on
127.0.0.1 (ephemeral port) in a thread."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.interactions import Dataset, Interactions
from zsgen.loaders import demo_catalog_path, load_demo
from zsgen.serve.config import ServeConfig, config_from_dict
from zsgen.testing.servers import Reply, ScriptedServer, completion_body

#: Put this word in a template's instructions and the scripted LLM ranks the candidates by title, A to Z; otherwise
#: it answers the shown labels in reverse order. Either way its answer differs from the first-stage order.
ALPHABETICAL = "ALPHABETICAL"
#: With this word in the prompt the scripted LLM answers prose without labels (the reranker falls back).
GARBLE = "GARBLE"
#: With this word in the prompt the scripted LLM names its first label twice (the parser repairs the answer).
STUTTER = "STUTTER"
_CANDIDATE = re.compile(r'^\[([A-Z]{1,2})\] "([^"]*)"', re.MULTILINE)


def answer_for(prompt: str) -> list[str]:
    """The labels the scripted LLM answers for a prompt: by title A to Z when asked, else the shown order reversed."""
    shown = _CANDIDATE.findall(prompt)
    if ALPHABETICAL in prompt:
        return [label for label, _ in sorted(shown, key=lambda pair: pair[1].lower())]
    return [label for label, _ in reversed(shown)]


def answer_text(prompt: str) -> str:
    """The scripted LLM's whole answer to a prompt."""
    if GARBLE in prompt:
        return "I would rather not rank these films today."
    labels = answer_for(prompt)
    if STUTTER in prompt and labels:
        labels = [labels[0], *labels]
    return json.dumps({"ranking": labels})


def responder(body: Any) -> Reply:
    prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    return Reply(body=completion_body(answer_text(prompt)))


def demo_dataset(users: int = 12, events: int = 6) -> Dataset:
    """The demo catalog with ``users`` invented users of ``events`` events each. Each user keeps to one genre (the
    genres taken in turn, each user starting further into it), so the held-out last event is often among the
    first-stage candidates and the order matters for NDCG."""
    catalog = load_demo().catalog
    by_genre: dict[str, list[int]] = {}
    for position in range(len(catalog)):
        by_genre.setdefault(catalog[position].genres[0], []).append(position)
    genres = [g for g, items in sorted(by_genre.items()) if len(items) >= 2 * events]
    user_index, item_index, timestamp = [], [], []
    for u in range(users):
        items = by_genre[genres[u % len(genres)]]
        start = (u // len(genres)) * events
        for e in range(events):
            user_index.append(u)
            item_index.append(items[(start + e) % len(items)])
            timestamp.append(1_000_000.0 + u * 100 + e)
    log = Interactions(
        user_ids=[f"u{u:02d}" for u in range(users)],
        user_index=np.array(user_index, dtype=np.int64),
        item_index=np.array(item_index, dtype=np.int64),
        timestamp=np.array(timestamp, dtype=np.float64),
        rating=np.full(len(user_index), np.nan),
    )
    return Dataset(catalog=catalog, interactions=log)


@dataclass
class LiveApp:
    base_url: str
    template_dir: Path
    llm: ScriptedServer
    dataset: Dataset
    config: ServeConfig


#: The environment variable the playground service reads its bearer token from (set, or unset, around the service).
TOKEN_ENV = "ZSGEN_TEST_PLAYGROUND_TOKEN"


def write_dataset(dataset: Dataset, folder: Path) -> tuple[Path, Path]:
    """``dataset`` as the files ``zsgen serve`` reads: the catalog as JSON Lines (the packaged demo catalog, copied)
    and the log as JSON Lines of ``user_id``, ``item_id``, ``timestamp``; returns (catalog, interactions)."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog_path = folder / "catalog.jsonl"
    shutil.copyfile(demo_catalog_path(), catalog_path)
    log = dataset.interactions
    if log is None:
        raise ValueError("the dataset has no interaction log to write")
    lines = [
        json.dumps(
            {
                "user_id": log.user_ids[int(user)],
                "item_id": dataset.catalog[int(item)].id,
                "timestamp": float(stamp),
            }
        )
        for user, item, stamp in zip(log.user_index, log.item_index, log.timestamp, strict=True)
    ]
    interactions_path = folder / "interactions.jsonl"
    interactions_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return catalog_path, interactions_path


def playground_config(
    folder: Path, *, llm_url: str | None, embedding_cache: Path | None = None, resamples: int = 200
) -> ServeConfig:
    """The serve config of the playground tests: :func:`demo_dataset` written under ``folder / "data"``, the cosine
    first stage over the packaged MiniLM, the scripted LLM at ``llm_url`` (none: no ``[rerank]`` table) and the
    playground saving into ``folder / "playground" / "templates"`` (a folder of its own, so a test can check that
    nothing is written beside it). The token is read from :data:`TOKEN_ENV`."""
    catalog_path, interactions_path = write_dataset(demo_dataset(), folder / "data")
    table: dict[str, Any] = {
        "dataset": {"path": str(catalog_path), "interactions": str(interactions_path)},
        "first_stage": "cosine",
        "embedding_cache": str(embedding_cache or folder / "data" / "embeddings.sqlite"),
        "token_env": TOKEN_ENV,
        "playground": {"template_dir": str(folder / "playground" / "templates"), "resamples": resamples},
    }
    if llm_url is not None:
        table["rerank"] = {
            "backend": "openai",
            "base_url": llm_url,
            "model": "scripted-model",
            "candidates": 12,
            "concurrency": 4,
        }
    return config_from_dict(table, source="playground test config")


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """``$name`` set to ``value`` (None: unset) for the ``with`` block, then as it was."""
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextmanager
def serve_playground(
    folder: Path, *, token: str | None = None, with_llm: bool = True, embedding_cache: Path | None = None
) -> Iterator[LiveApp]:
    """The service ``zsgen serve`` builds (:func:`zsgen.serve.app.create_app`) for :func:`playground_config`, on a
    real uvicorn on 127.0.0.1, with the scripted LLM; with ``token`` its API (the playground's included) needs it,
    without, the token variable is unset and the service is open on loopback. The page is public either way."""
    from zsgen.serve.app import create_app
    from zsgen.testing.serve_app import running

    dataset = demo_dataset()
    with ScriptedServer(responder=responder) as llm, _environment(TOKEN_ENV, token):
        config = playground_config(folder, llm_url=llm.base_url if with_llm else None, embedding_cache=embedding_cache)
        assert config.playground is not None and config.playground.template_dir is not None
        with running(create_app(config)) as base_url:
            yield LiveApp(
                base_url=base_url,
                template_dir=Path(config.playground.template_dir),
                llm=llm,
                dataset=dataset,
                config=config,
            )
