"""Parser cost on hostile answers: the issue-12 gadgets at 40 KB, 400 KB and 1 MB, with and without the length cap.

    python evaluation/perf/bench_parser.py [--sizes 40000,400000,1000000] [--repeats 3] [--fuzz 20000] [--seed 0]

Each gadget once made ``parse_ranking`` quadratic (a 20 KB answer of ``"1. a" + " " * 20000 + "b"`` took 11 s). The
goal is that no answer up to 1 MB takes more than 100 ms. Two settings are timed:

* **capped** — the library as shipped: the answer, once ``<think>`` blocks are removed, is cut at
  ``MAX_ANSWER_CHARS`` before it is read;
* **uncapped** — ``MAX_ANSWER_CHARS`` raised to 10**9, so every reading runs over the whole answer: this shows the
  readings themselves are linear, i.e. that the cap bounds cost rather than hiding a quadratic path.

``--fuzz N`` also parses N seeded random answers (label soup, JSON fragments, prose, long runs) and reports
exceptions other than ``ParseError`` (there must be none), non-permutations (none) and the slowest case. Timings are
best-of ``--repeats`` per gadget; the machine's load is printed alongside, since these are wall-clock numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable

import zsgen.rerank.parse as parse
from zsgen.errors import ParseError

LABELS = [chr(ord("A") + i) for i in range(20)]
TITLES = [
    "Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Shanghai Triad", "Twelve Monkeys", "Babe",
    "Dead Man Walking", "Richard III", "Seven", "Usual Suspects, The", "Mighty Aphrodite", "Postino, Il",
    "Mr. Holland's Opus", "French Twist", "From Dusk Till Dawn", "White Balloon, The", "Antonia's Line",
    "Angels and Insects",
]  # fmt: skip


def gadgets(size: int) -> dict[str, str]:
    """The issue's slow answers and their relatives, each about ``size`` characters."""
    return {
        "list line + run of spaces": "1. a" + " " * size + "b",
        "JSON element + run of spaces": '{"ranking": ["A' + " " * size + 'B"]}',
        "truncated JSON + run of spaces": '["A",' + " " * size + '"B"',
        "repeated unclosed <think>": "<think>a" * (size // 8) + " A B",
        "repeated <think> then answer": "<think>x</think>" * (size // 16) + "C, A, B",
        'repeated "a":[ ... ]x': '"a":[ "A", "B" ]x' * (size // 17),
        'repeated "a":[ ... x': '"a":[ "A", "B" x' * (size // 16),
        "escaped quotes, unclosed": '["' + '\\"' * (size // 2),
        "nested brackets": "[" * size,
        "capitals in prose": "A " * (size // 2),
        "bracket openers": "( " * (size // 2),
        "unknown JSON labels": json.dumps({"ranking": [f"x{i}" for i in range(size // 8)]}),
        "near-miss titles": json.dumps({"ranking": ["Toy Storx", "Copycet", "Babe Pig"] * (size // 33)}),
        "label soup": ("C > A, [B] (D) 3. E " * (size // 20)),
    }


def fuzz_answer(rng: random.Random) -> str:
    pieces = [
        *LABELS[:6], "a", "z", "Z", "I", "0", "3", "42", "[2]", "(C)", "[Q]", ",", ", ", " > ", " -> ", " ", "\n",
        "1. ", "- ", '"', "[", "]", "{", "}", '{"ranking": [', '"ranking":', ":", "Toy Story", "Babe", "The",
        "and", "then", "I think", "A great", "Not A Candidate", "```json\n", "```", "<think>", "</think>", "\\",
        " " * rng.randint(1, 3000), "[" * rng.randint(1, 3000), "<think>" * rng.randint(1, 200),
    ]  # fmt: skip
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))


def timed(call: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.suppress(ParseError):
            call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="40000,400000,1000000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fuzz", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shipped_cap = parse.MAX_ANSWER_CHARS
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}, cap {shipped_cap} characters")
    print(f"{'gadget':32} {'size':>9} {'capped ms':>10} {'uncapped ms':>12}")
    worst = {"capped": 0.0, "uncapped": 0.0}
    for size in sizes:
        for name, text in gadgets(size).items():
            row = []
            for setting, cap in (("capped", shipped_cap), ("uncapped", 10**9)):
                parse.MAX_ANSWER_CHARS = cap
                seconds = timed(lambda t=text: parse.parse_ranking(t, LABELS, TITLES), args.repeats)
                worst[setting] = max(worst[setting], seconds)
                row.append(seconds * 1000)
            parse.MAX_ANSWER_CHARS = shipped_cap
            print(f"{name:32} {len(text):>9} {row[0]:>10.1f} {row[1]:>12.1f}")
    print(f"slowest gadget: capped {worst['capped'] * 1000:.1f} ms, uncapped {worst['uncapped'] * 1000:.1f} ms")
    if args.fuzz:
        rng = random.Random(args.seed)
        errors = non_permutations = 0
        slowest, slowest_len = 0.0, 0
        for _ in range(args.fuzz):
            text = fuzz_answer(rng)
            start = time.perf_counter()
            try:
                result = parse.parse_ranking(text, LABELS, TITLES)
                if sorted(result.order) != list(range(len(LABELS))):
                    non_permutations += 1
            except ParseError:
                pass
            except Exception as exc:  # what the fuzz is for: there must be none
                errors += 1
                print(f"  {type(exc).__name__}: {exc} on {text[:80]!r}")
            elapsed = time.perf_counter() - start
            if elapsed > slowest:
                slowest, slowest_len = elapsed, len(text)
        print(
            f"fuzz: {args.fuzz} answers (seed {args.seed}), {errors} exceptions, {non_permutations} non-permutations, "
            f"slowest {slowest * 1000:.1f} ms ({slowest_len} characters)"
        )
        return 1 if errors or non_permutations else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
