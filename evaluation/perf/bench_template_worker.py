"""What isolating a user's template costs: one render in a worker process (zsgen.templates.worker) against the same
render in-process, and how long a template that runs one long operation takes to be stopped.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_template_worker.py [--renders 300]

The packaged listwise template renders in-process (it shipped with zsgen); a byte-identical copy in a user folder
renders in a worker. The first isolated render includes starting the worker; the rest reuse it. The hostile copy adds
``{% set _b = (['a' * 400000] * 50000)|max %}`` after its ``<<user>>`` line (issue 24): one filter call the sandbox
cannot interrupt, stopped by the worker's wall-clock limit.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from zsgen.errors import TemplateError
from zsgen.paths import prompts_dir
from zsgen.templates import PromptTemplate, sample_variables, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=300)
    args = parser.parse_args()
    source = (prompts_dir() / "listwise.jinja").read_text(encoding="utf-8")
    variables = sample_variables()
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "mine.jinja"
        copy.write_text(source, encoding="utf-8")
        lines = source.splitlines()
        at = next(n for n, line in enumerate(lines) if "<<user>>" in line) + 1
        hostile = Path(folder) / "stall.jinja"
        hostile.write_text("\n".join([*lines[:at], "{% set _b = (['a' * 400000] * 50000)|max %}", *lines[at:]]))
        packaged, mine = PromptTemplate.from_file(prompts_dir() / "listwise.jinja"), PromptTemplate.from_file(copy)
        start = time.perf_counter()
        assert mine.render(**variables) == packaged.render(**variables)
        first = time.perf_counter() - start
        timings = {}
        for label, template in (("in-process (packaged)", packaged), ("worker (user copy)", mine)):
            start = time.perf_counter()
            for _ in range(args.renders):
                template.render(**variables)
            timings[label] = (time.perf_counter() - start) / args.renders
        start = time.perf_counter()
        try:
            PromptTemplate.from_file(hostile).render(**variables)
            stopped = "not stopped"
        except TemplateError as exc:
            stopped = f"stopped (limit {exc.limit!r})"
        hostile_s = time.perf_counter() - start
    worker.shutdown()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; {args.renders} renders each")
    print(f"first isolated render (starts the worker): {first * 1e3:.0f} ms")
    for label, seconds in timings.items():
        print(f"{label:24s} {seconds * 1e3:8.3f} ms per render")
    print(f"hostile template: {stopped} after {hostile_s:.2f} s (wall limit {worker.WALL_SECONDS:g} s)")


if __name__ == "__main__":
    main()
