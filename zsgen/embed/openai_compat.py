"""Embeddings from any server speaking the OpenAI ``/v1/embeddings`` API (OpenAI, vLLM, TEI, llama.cpp, ...).

Keys, client construction and the one retry policy are shared with the chat backend (:mod:`zsgen.llm.openai_client`):
transient failures (connection, timeout, 408, 409, 429, 5xx) are retried, waiting as long as ``Retry-After`` asks;
anything else is a caller or server fault and becomes an :class:`~zsgen.errors.EncoderError` at once. The API key is
passed to the SDK and nowhere else: it is never logged, cached or part of :attr:`identity`. The encoder owns one
synchronous HTTP client; ``close()`` (or ``with``) releases its connections.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import openai
from tqdm.auto import tqdm

from zsgen.embed.base import FloatMatrix, empty_matrix, l2_normalise
from zsgen.embed.local import PROGRESS_THRESHOLD
from zsgen.errors import ConfigError, EncoderError
from zsgen.lifecycle import Closing
from zsgen.llm.openai_client import RetryPolicy, resolve_api_key, sync_client
from zsgen.redact import redact_url

logger = logging.getLogger(__name__)

_PROBE_TEXT = "dimension probe"


class OpenAIEmbeddingEncoder(Closing):
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
        retry_after_cap: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        if not model.strip():
            raise ConfigError("an embedding model name is required")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if dimensions is not None and dimensions < 1:
            raise ConfigError(f"dimensions must be positive, got {dimensions}")
        self.retry = RetryPolicy(
            max_retries=max_retries,
            retry_after_cap=retry_after_cap,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        key = resolve_api_key(api_key, base_url)
        self.model = model
        self.base_url = base_url
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.max_retries = max_retries
        self._client = sync_client(base_url, key, timeout)
        self._dim: int | None = dimensions
        # The identity is stored in the embedding cache: a password in the URL must not be (zsgen.redact).
        where = redact_url(base_url.rstrip("/")) if base_url else "openai"
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

    def close(self) -> None:
        """Close the HTTP client's connections (the encoder cannot be used afterwards)."""
        self._client.close()

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
        last = first + len(batch) - 1

        def to_encoder_error(exc: openai.OpenAIError, attempts: int) -> EncoderError:
            tries = f" after {attempts} attempt(s)" if attempts > 1 else ""
            if isinstance(exc, openai.APIStatusError):
                return EncoderError(
                    f"embedding server ({self.model}) answered HTTP {exc.status_code} for texts "
                    f"#{first}-#{last}{tries}: {_short(exc.message)}"
                )
            return EncoderError(
                f"embedding server ({self.model}) failed{tries}: {type(exc).__name__}: {_short(str(exc))}"
            )

        def attempt() -> Any:
            return self._client.embeddings.create(input=batch, model=self.model, encoding_format="float", **extra)

        response = self.retry.call(f"embedding request (texts #{first}-#{last})", attempt, to_encoder_error)
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
