"""Per-user latency of SmolLM2 listwise through vLLM: no schema, the old fixed schema, the per-candidate schema.

    make vllm-serve &      # vLLM's OpenAI server (CPU build) with the packaged SmolLM2 on 127.0.0.1:8765
    HF_HUB_OFFLINE=1 python evaluation/perf/bench_vllm_constrained.py [--users 20] [--base-url URL]

Each user is a seeded MovieLens-100K user (history 50, the target plus 19 random unseen items, as the LLMRank-style
configs). For each user the same listwise messages are sent three times, one request at a time, so the latency is
the server's time for one answer, not time spent queueing: once without a schema, once with the fixed
``{"ranking": array of strings}`` schema zsgen sent before issue 16, once with the schema built for the candidates
(labels as an enum, ``minItems`` = ``maxItems`` = 20). Reported: median and p90 latency, completion tokens, how many
answers hit the 100-token cap, how many parse with no repair, and how many name something outside the candidates.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

from zsgen.llm import OpenAIChatBackend
from zsgen.loaders import load_dataset
from zsgen.rerank import build_messages, make_labels, parse_ranking, ranking_schema
from zsgen.rerank.prompt import item_view
from zsgen.templates import PromptLibrary
from zsgen.types import History

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"
HISTORY, CANDIDATES, MAX_TOKENS = 50, 20, 100
FIXED_SCHEMA: dict[str, Any] = {  # what every listwise request carried before issue 16
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "string"}}},
    "required": ["ranking"],
    "additionalProperties": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--base-url", default="http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()

    dataset = load_dataset(DATA)
    catalog, interactions = dataset.catalog, dataset.interactions
    assert interactions is not None
    rng = random.Random(0)
    template = PromptLibrary().get("listwise")
    ids = list(catalog.ids)
    sequences = {
        user: [ids[int(i)] for i in seq]
        for user, seq in zip(interactions.user_ids, interactions.item_sequences(), strict=True)
    }
    users = rng.sample(sorted(sequences, key=int), args.users)
    labels = make_labels(CANDIDATES, "letters")
    modes = {"no schema": None, "fixed schema (before)": FIXED_SCHEMA, "per-candidate schema (after)": None}
    stats: dict[str, dict[str, list[float]]] = {m: {"latency": [], "tokens": [], "cut": [], "clean": []} for m in modes}
    backends = {
        "no schema": OpenAIChatBackend(args.base_url, model=args.model, structured="none", max_retries=0, timeout=600),
        "fixed schema (before)": OpenAIChatBackend(
            args.base_url, model=args.model, structured="json_schema", max_retries=0, timeout=600
        ),
        "per-candidate schema (after)": OpenAIChatBackend(
            args.base_url, model=args.model, structured="json_schema", max_retries=0, timeout=600
        ),
    }
    all_items = ids
    for user in users:
        events = sequences[user]
        history, target = events[:-1][-HISTORY:], events[-1]
        seen = set(events)
        shown = [target, *rng.sample([i for i in all_items if i not in seen], CANDIDATES - 1)]
        rng.shuffle(shown)
        messages = build_messages(
            template, catalog, History.from_ids(history), None, shown, list(range(CANDIDATES)), history_length=HISTORY
        )
        titles = [item_view(catalog.get(i))["title"] for i in shown]
        for mode, backend in backends.items():
            schema = ranking_schema(labels, CANDIDATES) if "per-candidate" in mode else modes[mode]
            start = time.perf_counter()
            completion = backend.chat(messages, max_tokens=MAX_TOKENS, json_schema=schema)
            stats[mode]["latency"].append(time.perf_counter() - start)
            stats[mode]["tokens"].append(completion.usage.completion_tokens)
            stats[mode]["cut"].append(float(completion.finish_reason == "length"))
            try:
                parsed = parse_ranking(completion.text, labels, titles, expected=CANDIDATES)
                clean = parsed.status == "ok" and completion.finish_reason != "length"
            except Exception:
                clean = False
            stats[mode]["clean"].append(float(clean))
    for backend in backends.values():
        backend.close()
    print(
        f"{args.users} seeded ML-100K users, {CANDIDATES} candidates, history {HISTORY}, max_tokens {MAX_TOKENS}, "
        f"one request at a time; {platform.processor() or platform.machine()}, {platform.python_version()}"
    )
    print(f"{'request':32s} {'median s':>9s} {'p90 s':>7s} {'tokens':>7s} {'cut at cap':>10s} {'parsed clean':>12s}")
    for mode, values in stats.items():
        lat = sorted(values["latency"])
        p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
        print(
            f"{mode:32s} {statistics.median(lat):9.2f} {p90:7.2f} {statistics.mean(values['tokens']):7.1f} "
            f"{int(sum(values['cut'])):>10d} {int(sum(values['clean'])):>12d}"
        )


if __name__ == "__main__":
    main()
