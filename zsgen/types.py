"""The data model shared by every stage: items, histories, profiles, candidates and rankings.

These are pydantic v2 models so that results serialise to JSON exactly as they are, and so that bad records are
rejected at the boundary with a message naming the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AttributeValue = str | int | float | bool | list[str]

#: Where an item's position in the final ranking came from.
Source = Literal["llm", "cosine", "fusion", "retrieval"]

#: How the LLM answer was read: ``ok`` as given, ``repaired`` after dropping/adding labels, ``fallback`` when it
#: could not be used at all, ``none`` when no LLM stage ran.
ParseStatus = Literal["ok", "repaired", "fallback", "none"]


class Item(BaseModel):
    """One catalog entry. ``id`` is always a string so ids from CSV, JSON and MovieLens compare equal."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    description: str = ""
    year: int | None = None
    genres: tuple[str, ...] = ()
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(int(value)) if float(value).is_integer() else str(value)
        return value

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("item id must not be empty")
        return value.strip()


class Interaction(BaseModel):
    """One event in a history: the item, and when/how the user rated it if known."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    timestamp: float | None = None
    rating: float | None = None

    @field_validator("item_id", mode="before")
    @classmethod
    def _id_to_str(cls, value: object) -> object:
        return Item._id_to_str(value)


class History(BaseModel):
    """A user's interactions, oldest first. The order is the one given; it is never re-sorted silently."""

    interactions: list[Interaction] = Field(default_factory=list)

    @classmethod
    def from_ids(cls, ids: list[str] | tuple[str, ...]) -> History:
        return cls(interactions=[Interaction(item_id=str(i)) for i in ids])

    @property
    def item_ids(self) -> list[str]:
        return [event.item_id for event in self.interactions]

    def last(self, n: int) -> History:
        """The most recent ``n`` interactions (recent history beats long history, DESIGN.md §2)."""
        return History(interactions=self.interactions[-n:] if n > 0 else [])

    def __len__(self) -> int:
        return len(self.interactions)


class Profile(BaseModel):
    """Free text describing a user who has no history yet (cold-start user)."""

    text: str

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("profile text must not be empty")
        return value


class Candidate(BaseModel):
    """An item retrieved by the first stage, with its retrieval score (cosine unless said otherwise)."""

    model_config = ConfigDict(frozen=True)

    id: str
    score: float


class RankedItem(BaseModel):
    """One entry of a final ranking."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    score: float
    source: Source


class Usage(BaseModel):
    """Tokens spent by the LLM stage (summed over every call made for one user)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
        )


class Ranking(BaseModel):
    """The answer to one recommendation request.

    It always holds a permutation of the candidates that were shown to the reranker (truncated to ``k``). When the
    LLM stage failed, ``fallback`` is true, ``fallback_reason`` says why, and the order is the cosine order.
    ``first_stage`` names the stage that retrieved the candidates (``cosine`` or ``fusion``) and ``fusion_weights``
    where a fused stage's weights came from (``packaged``: zsgen's shipped defaults; a file's path; ``given``: a
    config built in code); the recommender fills both in.

    Frozen: a result is built whole by whoever produces it; a later stage that adds to it (timings, a cut to ``k``)
    makes a copy with ``model_copy(update=...)``.
    """

    model_config = ConfigDict(frozen=True)

    items: list[RankedItem]
    fallback: bool = False
    fallback_reason: str | None = None
    parse_status: ParseStatus = "none"
    repairs: list[str] = Field(default_factory=list)
    raw_text: str | None = None
    method: str | None = None
    backend: str | None = None
    model: str | None = None
    template: str | None = None
    template_hash: str | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    first_stage: Source | None = None
    fusion_weights: str | None = None

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]
