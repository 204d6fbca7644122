"""Embeddings from any server speaking the OpenAI ``/v1/embeddings`` API (OpenAI, vLLM, TEI, llama.cpp, ...).

There is one retry layer, ours: the SDK client is built with ``max_retries=0`` and transient failures (connection,
timeout, 409, 429, 5xx) are retried with exponential back-off; anything else is a caller or server fault and
becomes an :class:`~zsgen.errors.EncoderError` at once. The API key is passed to the SDK and nowhere else: it is
never logged, cached or part of :attr:`identity`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import openai
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from zsgen.embed.base import FloatMatrix, empty_matrix, l2_normalise
from zsgen.embed.local import PROGRESS_THRESHOLD
from zsgen.errors import ConfigError, EncoderError

logger = logging.getLogger(__name__)

#: Local servers usually ignore the key, but the SDK insists on one.
LOCAL_DUMMY_KEY = "not-needed"
_PROBE_TEXT = "dimension probe"


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (409, 429) or exc.status_code >= 500
    return False


class OpenAIEmbeddingEncoder:
    """Encodes through an OpenAI-compatible embeddings endpoint, ``batch_size`` texts per request.

    ``dim`` is what the server returns (or ``dimensions`` when requested); reading it before any encode costs one
    small request. Vectors are re-normalised here, since not every server returns unit vectors.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 256,
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not model.strip():
            raise ConfigError("an embedding model name is required")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if dimensions is not None and dimensions < 1:
            raise ConfigError(f"dimensions must be positive, got {dimensions}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base_url is None:
                raise ConfigError("no API key: pass api_key= or set OPENAI_API_KEY")
            key = LOCAL_DUMMY_KEY
        self.model = model
        self.base_url = base_url
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.max_retries = max_retries
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self._dim: int | None = dimensions
        where = base_url.rstrip("/") if base_url else "openai"
        self._identity = f"openai:{where}:{model}" + (f":dimensions={dimensions}" if dimensions else "")

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encode([_PROBE_TEXT], progress=False)
        assert self._dim is not None
        return self._dim

    def __repr__(self) -> str:
        return f"OpenAIEmbeddingEncoder({self._identity!r}, batch_size={self.batch_size})"

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> FloatMatrix:
        texts = list(texts)
        if not texts:
            return empty_matrix(self.dim)
        for position, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise EncoderError(f"text #{position} is empty; embedding servers reject empty input")
        show = progress if progress is not None else len(texts) > PROGRESS_THRESHOLD
        parts: list[np.ndarray] = []
        with tqdm(total=len(texts), disable=not show, desc="embedding", unit="text", leave=False) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                parts.append(self._request(batch, first=start))
                bar.update(len(batch))
        return l2_normalise(np.concatenate(parts, axis=0), what=f"embedding server ({self.model})")

    def _request(self, batch: list[str], *, first: int) -> np.ndarray:
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential(multiplier=0.5, max=8.0),
            reraise=True,
        )
        try:
            response = retrying(
                self._client.embeddings.create, input=batch, model=self.model, encoding_format="float", **extra
            )
        except openai.APIStatusError as exc:
            raise EncoderError(
                f"embedding server ({self.model}) answered HTTP {exc.status_code} for texts "
                f"#{first}-#{first + len(batch) - 1}: {_short(exc.message)}"
            ) from None
        except openai.OpenAIError as exc:
            raise EncoderError(
                f"embedding server ({self.model}) failed: {type(exc).__name__}: {_short(str(exc))}"
            ) from None
        return self._read(response, len(batch), first)

    def _read(self, response: Any, expected: int, first: int) -> np.ndarray:
        """Put the returned vectors back in input order (servers may reorder) and check there is one per text."""
        data = list(getattr(response, "data", None) or [])
        if len(data) != expected:
            raise EncoderError(f"embedding server ({self.model}) returned {len(data)} vectors for {expected} texts")
        indices = sorted(int(entry.index) for entry in data)
        if indices != list(range(expected)):
            raise EncoderError(
                f"embedding server ({self.model}) returned indices {indices[:5]}..., not 0..{expected - 1}"
            )
        data.sort(key=lambda entry: int(entry.index))
        try:
            matrix = np.asarray([entry.embedding for entry in data], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EncoderError(f"embedding server ({self.model}) returned malformed vectors: {exc}") from None
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise EncoderError(f"embedding server ({self.model}) returned vectors of ragged or zero length")
        if self._dim is None:
            self._dim = int(matrix.shape[1])
        elif matrix.shape[1] != self._dim:
            raise EncoderError(
                f"embedding server ({self.model}) returned {matrix.shape[1]}-d vectors for texts from #{first}, "
                f"expected {self._dim}"
            )
        return matrix


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
