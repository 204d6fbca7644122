"""The service's request and response bodies: pydantic models, from which FastAPI writes the OpenAPI schema.

A recommendation response is :class:`~zsgen.types.Ranking` itself plus a request id, so its JSON is exactly what
``zsgen recommend --json`` prints (``Ranking.model_dump(mode="json")``) with one more key. Every error, whatever its
cause, is :class:`ErrorResponse`: a type, one line of message, and for an unknown item the suggestions.

Request models forbid unknown keys: a misspelt option (``"bootstrapp": 3``) is a 422 naming it, not silently unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zsgen.types import AttributeValue, Item, Ranking

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "ErrorResponse",
    "Health",
    "ItemBody",
    "ItemResult",
    "Readiness",
    "RecommendRequest",
    "RecommendationResponse",
    "RerankOptions",
]

#: Hard caps in the schema itself; the config's (smaller) limits are checked per request with their own messages.
MAX_KEY = 512
MAX_TEXT = 20_000


def first_unencodable(value: object, where: str = "") -> str | None:
    """The path (``genres[2]``, ``attributes.mood``) of the first string under ``value`` that is not valid text (a
    lone surrogate), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "value"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = first_unencodable(key, f"{where}.<key>" if where else "<key>") or first_unencodable(
                item, f"{where}.{key}" if where else str(key)
            )
            if found:
                return found
    elif isinstance(value, list | tuple):
        for number, item in enumerate(value):
            found = first_unencodable(item, f"{where}[{number}]")
            if found:
                return found
    return None


class _Body(BaseModel):
    # Strict: "k": "10" or "year": 1984.5 is the caller's mistake (422), not something to coerce; the schema says so.
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _text_only(self) -> Self:
        """Every string, however deep (genres, attribute values, history keys), must be text: a lone surrogate
        (``"\\ud800"``, valid JSON) would fail later as a 500 in a cache key or the journal."""
        where = first_unencodable(self.__dict__)
        if where is not None:
            raise ValueError(f"{where}: not valid text (a lone UTF-16 surrogate)")
        return self


class RerankOptions(_Body):
    """Rerank options for this request; the service's config says which of them a request may set
    (``per_request``), and any other one is a 422."""

    candidates: int | None = Field(default=None, ge=2, description="candidates retrieved and reranked")
    bootstrap: int | None = Field(default=None, ge=1, le=64, description="shuffled reranks aggregated by Borda")
    fuse_cosine: float | None = Field(default=None, ge=0.0, le=1.0, description="weight of first-stage order")
    picks: int | None = Field(default=None, ge=1, description="labels the LLM names, best first")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    shuffle: bool | None = None
    history_length: int | None = Field(default=None, ge=1, le=1000, description="history items the prompt shows")
    template: str | None = Field(default=None, min_length=1, max_length=200, description="prompt template name")
    label_style: str | None = Field(default=None, pattern="^(letters|numbers)$")

    def given(self) -> dict[str, Any]:
        """The options set in the request."""
        return self.model_dump(exclude_none=True)


class RecommendRequest(_Body):
    """One user: a history (item ids or titles, oldest first) and/or a profile text."""

    history: list[Annotated[str, Field(max_length=MAX_KEY)] | int] = Field(
        default_factory=list, max_length=10_000, description="item ids (strings, or integers) or titles, oldest first"
    )
    profile: str | None = Field(default=None, max_length=MAX_TEXT, description="free-text profile")
    k: int | None = Field(default=None, description="items to return (default and bounds: the service's config)")
    rerank: RerankOptions | None = Field(default=None, description="per-request rerank options")
    use_llm: bool = Field(default=True, description="false: the first-stage order, no LLM call")

    @property
    def keys(self) -> list[str]:
        """The history as strings (MovieLens ids may come as JSON integers)."""
        return [str(key) for key in self.history]


class BatchRequest(_Body):
    """Many users in one call; each answer comes back in the order of ``users``."""

    users: list[RecommendRequest] = Field(min_length=1, max_length=10_000)


class RecommendationResponse(Ranking):
    """``zsgen recommend --json``'s object plus ``request_id`` (also in the ``X-Request-ID`` header)."""

    request_id: str


class BatchResponse(BaseModel):
    request_id: str
    results: list[RecommendationResponse]


class ItemBody(_Body):
    """A cold-start item's text: title, and optionally description, year, genres, attributes."""

    title: str = Field(min_length=1, max_length=MAX_TEXT, pattern=r"\S")
    description: str = Field(default="", max_length=MAX_TEXT)
    year: int | None = Field(default=None, ge=0, le=9999)
    genres: list[str] = Field(default_factory=list, max_length=100)
    attributes: dict[str, AttributeValue] = Field(default_factory=dict, max_length=100)

    def to_item(self, item_id: str) -> Item:
        return Item(
            id=item_id,
            title=self.title,
            description=self.description,
            year=self.year,
            genres=tuple(self.genres),
            attributes=self.attributes,
        )


class ItemResult(BaseModel):
    id: str
    created: bool = Field(description="PUT: a new item (false: an existing one replaced)")
    retired: bool = Field(description="whether the item is now retired (never recommended)")
    catalog_size: int
    request_id: str


class ErrorBody(BaseModel):
    type: str = Field(description="what went wrong, e.g. unknown_item, invalid_k, body_too_large")
    message: str = Field(description="one line")
    suggestions: list[str] | None = Field(default=None, description="for unknown_item: close ids or titles")


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str | None = None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    catalog_size: int
    retired: int
    first_stage: str
    reranker: str | None
