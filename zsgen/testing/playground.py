"""A real playground app for the playground tests: the demo catalog with a small invented interaction log, the
packaged MiniLM cosine first stage, a scripted LLM on loopback that ranks by what the prompt asks, and the playground
routers mounted on a FastAPI app served by a real uvicorn on 127.0.0.1 (ephemeral port) in a thread."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.interactions import Dataset, Interactions
from zsgen.loaders import load_demo
from zsgen.recommender import Recommender
from zsgen.rerank import RerankConfig
from zsgen.retrieval import Retriever
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


@contextmanager
def serve_playground(
    template_dir: Path, *, retriever: Retriever, token: str | None = None, with_llm: bool = True
) -> Iterator[LiveApp]:
    """The playground on a real uvicorn; with ``token``, the API router sits behind a bearer check as the service
    mounts it (the page stays public)."""
    import uvicorn
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    from zsgen.serve.playground import PlaygroundContext, build_playground_routers

    dataset = demo_dataset()
    with ScriptedServer(responder=responder) as llm:
        config = (
            RerankConfig(backend="openai", base_url=llm.base_url, model="scripted-model", candidates=12, concurrency=4)
            if with_llm
            else None
        )
        recommender = Recommender(dataset.catalog, retriever=retriever)
        ctx = PlaygroundContext(
            dataset=dataset,
            recommender=recommender,
            rerank_config=config,
            template_dir=template_dir,
            api_key="sk-test-not-a-real-key",
            resamples=200,
        )
        page, api = build_playground_routers(ctx)
        app = FastAPI()
        app.include_router(page)
        if token is None:
            app.include_router(api)
        else:
            bearer = HTTPBearer(auto_error=False)

            def auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
                if credentials is None or credentials.credentials != token:
                    raise HTTPException(status_code=401, detail="missing or wrong bearer token")

            app.include_router(api, dependencies=[Depends(auth)])
        # The socket is bound and listening before uvicorn runs: a client connecting early waits in the backlog
        # until uvicorn accepts, so nothing has to poll for "started".
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = int(sock.getsockname()[1])
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="playground-uvicorn", daemon=True)
        thread.start()
        try:
            yield LiveApp(base_url=f"http://127.0.0.1:{port}", template_dir=template_dir, llm=llm, dataset=dataset)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            ctx.close()
