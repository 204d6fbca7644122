"""User-edited prompt templates render in worker processes that are killed at the render limit.

The sandbox's budget (:mod:`zsgen.templates`) is checked between a template's operations, so one operation that runs
long — a single filter over a huge list — runs to its end however far past the limit that is; in a thread it cannot
be stopped at all, and on an event loop it stalls every other request. So a template that did not ship with zsgen
(a file in the user's folder, a playground draft) renders in a child process:

- the child runs the very same sandboxed render (:meth:`~zsgen.templates.PromptTemplate.render_text`) and sends back
  the text or the template error; it caps its own memory (``RLIMIT_AS``) and, per render, its CPU time
  (``RLIMIT_CPU`` a few seconds past what it has used: the kernel stops a render the parent no longer waits for);
- the parent waits at most :data:`WALL_SECONDS` for the answer, then kills the child and raises a
  :class:`~zsgen.errors.TemplateError` whose ``limit`` is ``"time"``; a new child is started for the next render.

Children are kept between renders (a render costs a pipe round trip, not a process start) in a small pool, one render
per child at a time. Requests and answers are JSON lines: the variables are plain data already (the sandbox copies
them), and nothing that could run code is unpickled on either side. Packaged templates render in-process: their code
is zsgen's, and everything they are given is size-checked.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import resource
import selectors
import subprocess
import sys
import threading
import time
from typing import Any

from zsgen.errors import TemplateError

__all__ = ["MEMORY_BYTES", "WALL_SECONDS", "render_isolated", "shutdown"]

logger = logging.getLogger(__name__)

#: Wall-clock seconds the parent waits for one render before it kills the child (the sandbox allows 1 s of CPU).
WALL_SECONDS = 10.0
#: Address space a child may use: a template building a huge value fails with MemoryError, not the machine.
MEMORY_BYTES = 2 << 30
#: CPU seconds a child may spend past what it had used when a render started.
CPU_SECONDS = 2
#: Children kept at most; more concurrent renders wait for one.
MAX_WORKERS = 4


class _Worker:
    """One child process and its pipes."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zsgen.templates.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The child's answer, or None when it gave none within ``timeout`` seconds (it is then killed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self.kill()
            return None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.kill()
                return None
        line = self.proc.stdout.readline()
        if not line:  # the child died (its CPU or memory cap)
            self.kill()
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class _Pool:
    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_WORKERS)

    def render(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None or not worker.alive:
                worker = _Worker()
            answer = worker.ask(request, timeout)
            if worker.alive:
                with self._lock:
                    self._idle.append(worker)
            return answer

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def shutdown() -> None:
    """Stop the idle children (they are started again on demand)."""
    _POOL.shutdown()


def render_isolated(
    *, name: str, source: str, path: str | None, context: dict[str, Any], where: str, timeout: float = WALL_SECONDS
) -> str:
    """The text of the template (name, source, path) for ``context``, rendered in a child process (module docstring).

    Raises the :class:`~zsgen.errors.TemplateError` the render raised, or one with ``limit="time"`` when the child was
    stopped at ``timeout``."""
    start = time.monotonic()
    answer = _POOL.render({"name": name, "source": source, "path": path, "context": context}, timeout)
    if answer is None:
        elapsed = time.monotonic() - start
        logger.warning("template %s: render stopped after %.3g s (its worker process was killed)", where, elapsed)
        raise TemplateError(
            f"template limit exceeded: time (at most {CPU_SECONDS} s of CPU or {timeout:g} s per render): the render "
            "was still running and was stopped",
            template=where,
            limit="time",
        )
    if "error" in answer:
        raise TemplateError(answer["error"], template=where, line=answer.get("line"), limit=answer.get("limit"))
    return str(answer["text"])


def _serve() -> None:
    """The child: render requests from stdin until it closes."""
    from pathlib import Path

    from zsgen.templates.library import PromptTemplate

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    compiled: dict[tuple[str, str, str | None], PromptTemplate] = {}
    for line in sys.stdin.buffer:
        request = json.loads(line)
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = math.ceil(used.ru_utime + used.ru_stime) + CPU_SECONDS
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        key = (request["name"], request["source"], request["path"])
        answer: dict[str, Any]
        try:
            template = compiled.get(key)
            if template is None:
                path = Path(request["path"]) if request["path"] is not None else None
                template = PromptTemplate(request["name"], request["source"], path, isolated=False)
                if len(compiled) > 64:
                    compiled.clear()
                compiled[key] = template
            answer = {"text": template.render_text(request["context"])}
        except TemplateError as exc:
            answer = {"error": exc.detail, "line": exc.line, "limit": exc.limit}
        except MemoryError:
            answer = {
                "error": "template limit exceeded: memory (the render ran out of its memory cap)",
                "limit": "memory",
            }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
