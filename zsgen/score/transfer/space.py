"""The item feature space of the transfer signals, fixed when they are fitted.

A transfer map (:mod:`zsgen.score.transfer.features`) is learnt on columns built from the catalog it was fitted
on: which genres and attribute values get a one-hot column, the mean a year is centred on, each column's spread,
each block's scale. An item added afterwards must be placed in *those* columns — not in columns re-derived from a
catalog that now includes it — or the learnt coefficients would read the wrong numbers. :class:`FeatureSpace`
keeps them: ``fit_feature_space(catalog, vectors).transform(items, their_vectors)`` gives, for the fitted catalog's
own items, exactly the matrix :func:`~zsgen.score.transfer.features.item_features` returns, and for new items their
rows in the same space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.types import Item

FloatMatrix = npt.NDArray[np.float64]


def _categories(source: str, item: Item) -> list[str]:
    """The values ``item`` has for a categorical source (``genre``, ``decade`` or ``attr:<name>``)."""
    if source == "genre":
        return list(item.genres)
    if source == "decade":
        return [str(item.year // 10 * 10)] if item.year is not None else []
    value = item.attributes.get(source.removeprefix("attr:"))
    if value is None:
        return []
    return [str(x) for x in value] if isinstance(value, list | tuple) else [str(value)]


def _number(source: str, item: Item) -> float | None:
    """The value ``item`` has for a numeric source (``year`` or ``attr:<name>``), or ``None`` when it has none."""
    value = item.year if source == "year" else item.attributes.get(source.removeprefix("attr:"))
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Column:
    """One attribute column: a one-hot value, a centred number, or that number's "missing" flag."""

    name: str
    source: str
    kind: Literal["one_hot", "numeric", "missing"]
    value: str = ""
    mean: float = 0.0

    def raw(self, items: Sequence[Item]) -> FloatMatrix:
        if self.kind == "one_hot":
            return np.array([self.value in _categories(self.source, item) for item in items], dtype=np.float64)
        values = [_number(self.source, item) for item in items]
        known = np.array([v is not None for v in values], dtype=bool)
        if self.kind == "missing":
            return (~known).astype(np.float64)
        raw = np.array([v if v is not None else 0.0 for v in values], dtype=np.float64)
        return np.where(known, raw - self.mean, 0.0)


@dataclass(frozen=True)
class AttributeSpace:
    """The attribute columns chosen on the fitted catalog, with the spread each is divided by."""

    columns: tuple[Column, ...]
    spread: FloatMatrix

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def transform(self, items: Sequence[Item]) -> FloatMatrix:
        if not self.columns:
            return np.zeros((len(items), 0))
        matrix = np.column_stack([column.raw(items) for column in self.columns])
        return np.divide(matrix, self.spread, out=np.zeros_like(matrix), where=self.spread > 0)


def fit_attribute_space(catalog: Catalog, *, min_items: int = 2) -> AttributeSpace:
    """Genre and categorical values one-hot (values shared by at least ``min_items`` items and not by all), the year
    and numeric attributes centred, plus a "missing" flag where some items lack them; each column's spread over the
    catalog kept so that every column has unit variance there."""
    items = list(catalog)
    n = len(items)
    columns: list[Column] = []

    def one_hot(source: str) -> None:
        counts: dict[str, int] = {}
        for item in items:
            for value in set(_categories(source, item)):
                counts[value] = counts.get(value, 0) + 1
        for value in sorted(v for v, c in counts.items() if min_items <= c < n):
            columns.append(Column(f"{source}={value}", source, "one_hot", value=value))

    def numeric(source: str) -> None:
        values = [_number(source, item) for item in items]
        known = [v for v in values if v is not None]
        if len(known) < min_items:
            return
        columns.append(Column(source, source, "numeric", mean=float(np.array(known).mean())))
        if len(known) < n:
            columns.append(Column(f"{source}:missing", source, "missing"))

    one_hot("genre")
    numeric("year")
    if any(item.year is not None for item in items):  # decades as categories too: popularity is not linear in year
        one_hot("decade")
    for name in sorted({key for item in items for key in item.attributes}):
        values = [item.attributes.get(name) for item in items]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
            numeric(f"attr:{name}")
        else:
            one_hot(f"attr:{name}")
    if not columns:
        return AttributeSpace((), np.zeros(0))
    matrix = np.column_stack([column.raw(items) for column in columns])
    return AttributeSpace(tuple(columns), matrix.std(axis=0))


def _mean_norm(matrix: FloatMatrix) -> float:
    return max(float(np.linalg.norm(matrix, axis=1).mean()), 1e-12)


@dataclass(frozen=True)
class FeatureSpace:
    """Text vector and attribute columns side by side, each block divided by its mean row norm on the fitted
    catalog, so that the ridge penalty treats the two sources evenly."""

    text_scale: float
    attributes: AttributeSpace | None
    attribute_scale: float

    def transform(self, items: Sequence[Item], item_vectors: npt.ArrayLike) -> FloatMatrix:
        blocks = [np.asarray(item_vectors, dtype=np.float64) / self.text_scale]
        if self.attributes is not None:
            blocks.append(self.attributes.transform(items) / self.attribute_scale)
        return np.hstack(blocks)


def fit_feature_space(catalog: Catalog, item_vectors: npt.ArrayLike, *, attributes: bool = True) -> FeatureSpace:
    """The space :func:`~zsgen.score.transfer.features.item_features` builds for ``catalog``, kept for new items."""
    text_scale = _mean_norm(np.asarray(item_vectors, dtype=np.float64))
    if not attributes:
        return FeatureSpace(text_scale, None, 1.0)
    space = fit_attribute_space(catalog)
    if not space.columns:
        return FeatureSpace(text_scale, None, 1.0)
    return FeatureSpace(text_scale, space, _mean_norm(space.transform(list(catalog))))
