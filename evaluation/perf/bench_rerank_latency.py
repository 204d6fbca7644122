"""Per-user reranking latency on the local SmolLM2: listwise generation vs verbalizer vs pointwise (prefix reuse).

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_rerank_latency.py [--users 5] [--threads N] [--dtypes float32,bf16]

Each user is a MovieLens-100K user: the last 5 rated items (by time) as history, the next item plus 19 seeded random
unseen items as 20 candidates, rendered with the packaged templates (``listwise``, ``verbalizer_listwise``,
``pointwise``). The methods run one after another for each user, so load from other processes on the machine hits
them alike; medians over users are reported. The first user is a warm-up and is not counted.

Also prints the prompt tokens of every packaged template for the first user (SmolLM2 tokenizer, chat template
included): ``--tokens-only`` prints just that table.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"
HISTORY, CANDIDATES = 5, 20


def load_users(n_users: int, seed: int = 0) -> list[dict[str, Any]]:
    """Template variables for ``n_users`` seeded MovieLens users (history 5, 20 labelled candidates)."""
    items: dict[str, dict[str, Any]] = {}
    for line in (DATA / "ml-100k.item").read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        item_id, title, year, genres = [*line.split("\t"), "", "", ""][:4]
        items[item_id] = {
            "id": item_id,
            "title": title,
            "year": int(year) if year.isdigit() else None,
            "genres": genres.split(),
            "description": "",
        }
    events: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in (DATA / "ml-100k.inter").read_text().splitlines()[1:]:
        user, item, _rating, stamp = line.split("\t")
        events[user].append((float(stamp), item))
    rng = random.Random(seed)
    users = sorted(events, key=int)
    chosen = rng.sample(users, n_users)
    all_items = sorted(items, key=int)
    out = []
    for user in chosen:
        seq = [item for _, item in sorted(events[user])]
        history, target = seq[-HISTORY - 1 : -1], seq[-1]
        seen = set(seq)
        others = rng.sample([i for i in all_items if i not in seen], CANDIDATES - 1)
        shown = [target, *others]
        rng.shuffle(shown)
        labels = [chr(ord("A") + i) for i in range(CANDIDATES)]
        candidates = [{"label": label, **items[i]} for label, i in zip(labels, shown, strict=True)]
        out.append(
            {
                "user": user,
                "history": [items[i] for i in history],
                "candidates": candidates,
                "candidate": candidates[0],
                "n": 10,
                "profile": None,
                "preferences": "The user likes dramas and thrillers from the 1990s.",
                "representative": "1. Fargo 2. Heat",
            }
        )
    return out


def token_table(variables: dict[str, Any], tokenizer: Any) -> list[tuple[str, str, int]]:
    from zsgen.llm.models import render_chat
    from zsgen.llm.verbalizer import common_prefix_length
    from zsgen.templates import PromptLibrary

    library = PromptLibrary()
    rows = []
    for name in library.names():
        template = library.get(name)
        if "candidate" in template.variables and "candidates" not in template.variables:
            prompts = [
                render_chat(tokenizer, template.render(**{**variables, "candidate": c}))
                for c in variables["candidates"]
            ]
            prefix = common_prefix_length(prompts)
            total = sum(len(p) for p in prompts)
            shared = prefix + sum(len(p) - prefix for p in prompts)
            rows.append((name, f"per candidate, x{len(prompts)}", round(total / len(prompts))))
            rows.append((name, f"all {len(prompts)} separately", total))
            rows.append((name, f"all {len(prompts)}, shared prefix once", shared))
        else:
            rows.append((name, template.output, len(render_chat(tokenizer, template.render(**variables)))))
    return rows


def time_user(
    variables: dict[str, Any], generator: Any, verbalizer: Any, templates: dict[str, Any], args: argparse.Namespace
) -> dict[str, float]:
    """All methods for one user, one after another; returns seconds per method and token counts."""
    labels = [c["label"] for c in variables["candidates"]]
    gen_messages = templates["listwise"].render(**variables)
    ver_messages = templates["verbalizer_listwise"].render(**variables)
    conversations = [templates["pointwise"].render(**{**variables, "candidate": c}) for c in variables["candidates"]]
    row: dict[str, float] = {}
    start = time.perf_counter()
    completion = generator.chat(gen_messages, max_tokens=args.max_new_tokens)
    row["generation"] = time.perf_counter() - start
    row["gen_prompt"], row["gen_new"] = completion.usage.prompt_tokens, completion.usage.completion_tokens
    start = time.perf_counter()
    verbalizer.label_logprobs(ver_messages, labels)
    row["verbalizer"] = time.perf_counter() - start
    start = time.perf_counter()
    reused = verbalizer.yes_probabilities(conversations)
    row["pointwise_reuse"] = time.perf_counter() - start
    row["point_tokens"] = verbalizer.last_prompt_tokens
    if args.separate:
        start = time.perf_counter()
        separate = verbalizer.yes_probabilities(conversations, reuse_prefix=False)
        row["pointwise_separate"] = time.perf_counter() - start
        row["max_diff"] = max(abs(a - b) for a, b in zip(reused, separate, strict=True))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=5, help="users to time (plus one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated compute dtypes to compare")
    parser.add_argument("--no-separate", dest="separate", action="store_false", help="skip the no-reuse pointwise run")
    parser.add_argument("--tokens-only", action="store_true")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from zsgen.llm import LocalChatBackend, VerbalizerBackend
    from zsgen.templates import PromptLibrary

    users = load_users(args.users + 1)
    dtypes = [{"bf16": "bfloat16", "fp32": "float32"}.get(d, d) for d in args.dtypes.split(",")]
    verbalizers = {d: VerbalizerBackend(dtype=d) for d in dtypes}
    tokenizer = verbalizers[dtypes[0]]._loaded.tokenizer

    print("Prompt tokens per template (SmolLM2 tokenizer, chat template included; history 5, 20 candidates):")
    for name, kind, count in token_table(users[0], tokenizer):
        print(f"  {name:22s} {kind:34s} {count:6d}")
    if args.tokens_only:
        return

    generators = {d: LocalChatBackend(max_new_tokens=args.max_new_tokens, dtype=d) for d in dtypes}
    library = PromptLibrary()
    templates = {name: library.get(name) for name in ("listwise", "verbalizer_listwise", "pointwise")}
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for index, variables in enumerate(users):
        for dtype in dtypes:  # interleaved, so background load hits every configuration alike
            row = time_user(variables, generators[dtype], verbalizers[dtype], templates, args)
            if index == 0:
                continue  # warm-up
            rows[dtype].append(row)
            extra = (
                f" | pointwise separate {row['pointwise_separate']:5.2f} s (max diff {row['max_diff']:.1e})"
                if args.separate
                else ""
            )
            print(
                f"user {variables['user']:>4} {dtype:8s}: generation {row['generation']:6.2f} s"
                f" ({row['gen_new']:.0f} new tokens) | verbalizer {row['verbalizer']:5.2f} s"
                f" | pointwise reuse {row['pointwise_reuse']:5.2f} s{extra}",
                flush=True,
            )

    print()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch {torch.__version__}"
        f" with {torch.get_num_threads()} threads, load average at end {os.getloadavg()[0]:.1f},"
        f" python {sys.version.split()[0]}"
    )
    for dtype in dtypes:
        med = {key: statistics.median(r[key] for r in rows[dtype]) for key in rows[dtype][0]}
        print(f"{dtype}: medians over {len(rows[dtype])} users (20 candidates, history 5)")
        print(
            f"  generation (listwise, max_new_tokens {args.max_new_tokens}): {med['generation']:.3f} s"
            f"  [prompt {med['gen_prompt']:.0f} tok, new {med['gen_new']:.0f} tok]"
        )
        print(f"  verbalizer (listwise, one forward pass):   {med['verbalizer']:.3f} s")
        print(
            f"  pointwise, prefix reused (20 candidates):  {med['pointwise_reuse']:.3f} s"
            f"  [{med['point_tokens']:.0f} tokens run]"
        )
        if args.separate:
            print(
                f"  pointwise, each candidate separately:      {med['pointwise_separate']:.3f} s"
                f"  [max |reuse - separate| {max(r['max_diff'] for r in rows[dtype]):.1e}]"
            )
        print(f"  generation / verbalizer = {med['generation'] / med['verbalizer']:.1f}x (goal >= 5x)")
        print(f"  pointwise reuse / verbalizer = {med['pointwise_reuse'] / med['verbalizer']:.2f}x (goal <= 2x)")
        if args.separate:
            print(f"  pointwise separate / reuse = {med['pointwise_separate'] / med['pointwise_reuse']:.1f}x")


if __name__ == "__main__":
    main()
