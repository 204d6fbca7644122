"""Per-user latency of logit scoring over HTTP (verbalizer, pointwise) against a vLLM server, and what prefix caching
saved for pointwise.

    make vllm-serve VLLM_PORT=8791 &   # vLLM's CPU build with the packaged SmolLM2 (zsgen/testing/servers.py's flags)
    HF_HUB_OFFLINE=1 python evaluation/perf/bench_http_scoring.py --base-url http://127.0.0.1:8791/v1 [--users 5]

The users are bench_rerank_latency.py's (MovieLens-100K, history 5, 20 candidates, packaged templates). For each
user four modes run one after another: the verbalizer (one request, labels A–T) and pointwise (20 requests, up to 8
at once), each with and without the label restriction (vLLM's ``structured_outputs`` choice). Every mode's prompts
start with a mode tag in the system message, so no mode is served from another mode's prefix cache; within pointwise
the 20 prompts of one user share their history prefix, which is what the server's cache should save; the tag also
holds a run tag (default: the clock), so a rerun against the same server starts from a cold cache. Prompt tokens
computed vs. taken from the cache come from the server's ``/metrics`` (``vllm:prompt_tokens_total``,
``vllm:prompt_tokens_cached_total``). The first user is a warm-up; medians over the rest are printed.

``--compare-local`` also scores every prompt with the local verbalizer (transformers, float32, the same weights) and
prints the largest difference per quantity: the agreement claim of the README. Unrestricted label log-probabilities
differ by design (labels outside the top 20 get the floor); restricted ones and P(yes) should agree to ~1e-5.
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from bench_rerank_latency import load_users  # a sibling script: run as a script, its folder is on sys.path


def metric(base_url: str, name: str) -> float:
    root = base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def tagged(messages: list[dict[str, str]], tag: str) -> list[dict[str, str]]:
    first, *rest = messages
    return [{**first, "content": f"[{tag}] {first['content']}"}, *rest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument(
        "--run-tag",
        default=str(time.time_ns()),
        help="part of every mode tag (default: the clock), so a rerun is not served from an earlier run's cache",
    )
    parser.add_argument(
        "--compare-local",
        action="store_true",
        help="also score every prompt with the local verbalizer (same packaged model) and print the largest difference",
    )
    args = parser.parse_args()

    from zsgen.llm import OpenAIScoringBackend
    from zsgen.rerank import make_labels
    from zsgen.templates import PromptLibrary

    library = PromptLibrary()
    verbalizer, pointwise = library.get("verbalizer_listwise"), library.get("pointwise")
    labels = make_labels(20, "letters")
    backends = {
        restrict: OpenAIScoringBackend(args.base_url, model=args.model, restrict_choice=restrict, timeout=600.0)
        for restrict in (True, False)
    }
    local = None
    if args.compare_local:
        from zsgen.llm import VerbalizerBackend

        local = VerbalizerBackend()
    differences: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    tokens: dict[str, list[tuple[float, float]]] = {}
    for number, variables in enumerate(load_users(args.users + 1)):
        listwise_messages = verbalizer.render(**{**variables, "n": 1})
        conversations = [pointwise.render(**{**variables, "candidate": c}) for c in variables["candidates"]]
        for restrict, backend in backends.items():
            mode = "restricted" if restrict else "unrestricted"
            tag = f"run {args.run_tag} user {variables['user']} {mode}"
            start = time.perf_counter()
            served = backend.label_logprobs(tagged(listwise_messages, tag), labels)
            verbalizer_s = time.perf_counter() - start
            before = (
                metric(args.base_url, "vllm:prompt_tokens_total"),
                metric(args.base_url, "vllm:prompt_tokens_cached_total"),
            )
            start = time.perf_counter()
            probabilities = backend.yes_probabilities([tagged(c, tag) for c in conversations])
            pointwise_s = time.perf_counter() - start
            after = (
                metric(args.base_url, "vllm:prompt_tokens_total"),
                metric(args.base_url, "vllm:prompt_tokens_cached_total"),
            )
            print(f"user {number} {mode}: verbalizer {verbalizer_s:.2f} s, pointwise {pointwise_s:.2f} s", flush=True)
            if local is not None:
                mine = local.label_logprobs(tagged(listwise_messages, tag), labels)
                yes = local.yes_probabilities([tagged(c, tag) for c in conversations])
                for name, pairs in (
                    (f"label log-probability, {mode}", zip(served, mine, strict=True)),
                    (f"P(yes), {mode}", zip(probabilities, yes, strict=True)),
                ):
                    worst = max(abs(a - b) for a, b in pairs)
                    differences[name] = max(differences.get(name, 0.0), worst)
            if number == 0:
                continue  # warm-up
            times.setdefault(f"verbalizer {mode}", []).append(verbalizer_s)
            times.setdefault(f"pointwise {mode}", []).append(pointwise_s)
            tokens.setdefault(mode, []).append((after[0] - before[0], after[1] - before[1]))
    print(f"\nmedians over {args.users} users (warm-up excluded):")
    for name, values in times.items():
        print(f"  {name:<26} {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    for mode, pairs in tokens.items():
        total = sum(p for p, _ in pairs)
        cached = sum(c for _, c in pairs)
        print(
            f"  pointwise {mode}: {total:.0f} prompt tokens, {cached:.0f} from the prefix cache ({cached / total:.0%})"
        )
    for name, worst in differences.items():
        print(f"  largest |served - local| {name}: {worst:.2e}")
    for backend in backends.values():
        backend.close()


if __name__ == "__main__":
    main()
