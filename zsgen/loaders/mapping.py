"""Which column of a user's file holds which item or interaction field.

Defaults follow the names zsgen writes itself, so ``Item.model_dump_json()`` lines load back unchanged. A column
named explicitly must exist; a default column that is absent is simply not used. Mappings are frozen
:class:`~zsgen.configbase.StrictConfig` models: an unknown or invalid setting is a :class:`~zsgen.errors.ConfigError`.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from zsgen.configbase import StrictConfig


class ColumnMapping(StrictConfig):
    """Catalog columns. ``attributes`` lists extra columns copied into ``Item.attributes`` under their own names."""

    model_config = ConfigDict(frozen=True)

    id: str = "id"
    title: str = "title"
    description: str | None = "description"
    year: str | None = "year"
    genres: str | None = "genres"
    genre_separator: str = Field(default="|", min_length=1)
    attributes: list[str] = Field(default_factory=list)

    @field_validator("id", "title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("column name must not be empty")
        return value

    def required(self) -> list[str]:
        """Columns the file must have: the id, plus every column the caller named on purpose."""
        named = [self.id]
        for field in ("title", "description", "year", "genres"):
            column = getattr(self, field)
            if field in self.model_fields_set and column is not None:
                named.append(column)
        named.extend(self.attributes)
        return named


class InteractionMapping(StrictConfig):
    """Interaction columns. Timestamp and rating are optional; without a timestamp, file order is time order."""

    model_config = ConfigDict(frozen=True)

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str | None = "timestamp"
    rating: str | None = "rating"

    def required(self) -> list[str]:
        named = [self.user, self.item]
        for field in ("timestamp", "rating"):
            column = getattr(self, field)
            if field in self.model_fields_set and column is not None:
                named.append(column)
        return named
