"""A scripted "batch server": answers every line of request files as a server would, as result files do.

It stands in for the OpenAI Batch API or ``vllm run-batch`` in tests: each request body gets the reply the test's
``responder`` gives (the same function a :class:`servers.ScriptedServer` answers the online path with), the output
lines come back shuffled, requests named in ``fail`` go to a separate error file, and those in ``drop`` never come
back at all.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from zsgen.testing.servers import Reply


def request_lines(files: Iterable[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_batch(
    request_files: Iterable[Path],
    responder: Callable[[Any], Reply],
    out_dir: Path,
    *,
    drop: Iterable[str] = (),
    fail: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Answer every request line; returns the output file and (if any line failed) the error file.

    ``fail`` maps a custom_id to the error line's ``response`` and ``error`` (e.g. ``{"response": {"status_code":
    500, "body": {...}}, "error": None}`` or ``{"response": None, "error": {"code": ..., "message": ...}}``).
    """
    dropped, failing = set(drop), dict(fail or {})
    outputs: list[str] = []
    errors: list[str] = []
    for number, request in enumerate(request_lines(request_files)):
        custom_id = request["custom_id"]
        assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
        if custom_id in dropped:
            continue
        line: dict[str, Any] = {"id": f"batch_req_{number}", "custom_id": custom_id}
        if custom_id in failing:
            line.update({"response": None, "error": None}, **failing[custom_id])
            errors.append(json.dumps(line))
            continue
        reply = responder(request["body"])
        line["response"] = {"status_code": reply.status, "request_id": f"req_{number}", "body": reply.body}
        line["error"] = None
        outputs.append(json.dumps(line))
    random.Random(seed).shuffle(outputs)
    random.Random(seed + 1).shuffle(errors)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "output.jsonl"]
    files[0].write_text("".join(line + "\n" for line in outputs), encoding="utf-8")
    if errors:
        files.append(out_dir / "errors.jsonl")
        files[1].write_text("".join(line + "\n" for line in errors), encoding="utf-8")
    return files
