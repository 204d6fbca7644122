"""The signal kinds zsgen ships, registered in :mod:`zsgen.score.registry`: each kind's typed parameters (defaults
equal to its scorer's) and its factory. ``text`` is the one name of text cosine (``embedding`` and ``cosine`` are
old spellings that still load)."""

from __future__ import annotations

from zsgen.errors import ConfigError
from zsgen.score.base import Scorer
from zsgen.score.cooccurrence import CooccurrenceScorer, ItemFilteringScorer, Normalise
from zsgen.score.grouppop import GroupPopularityScorer
from zsgen.score.llm import LLMScorer
from zsgen.score.popularity import PopularityScorer
from zsgen.score.registry import SignalParams, SignalResources, register_signal
from zsgen.score.text import TextCosineScorer
from zsgen.score.userfilter import UserFilteringScorer
from zsgen.user_vectors import DEFAULT_HALF_LIFE, DEFAULT_PROFILE_WEIGHT, UserVector

#: A number as the file wrote it (an int stays an int when written back).
Number = int | float


class TextParams(SignalParams):
    user_vector: UserVector = "mean"
    history_length: int = 5
    half_life: Number = DEFAULT_HALF_LIFE
    profile_weight: Number = DEFAULT_PROFILE_WEIGHT


class PopularityParams(SignalParams):
    window: Number | None = None
    blend: Number = 1.0


class CooccurrenceParams(SignalParams):
    recent: int | None = 5
    decay: Number = 0.7
    normalise: Normalise = "cosine"
    window: int | None = None
    backward: Number = 1.0
    position_decay: Number = 1.0
    time_window: Number | None = None
    alpha: Number = 0.5
    user_weight: Number = 0.0


class UserFilteringParams(SignalParams):
    neighbours: int = 12
    include_self: bool = True


class ItemFilteringParams(SignalParams):
    neighbours: int = 12
    recent: int | None = None


class GroupPopularityParams(SignalParams):
    group_by: str | list[str] = "gender,age"
    banded: str | list[str] = "age"
    band_width: Number = 10.0


class LLMParams(SignalParams):
    n_candidates: int = 20
    floor_margin: Number = 1.0


@register_signal("text", TextParams, needs_logs=False, uses_text=True, aliases=("embedding", "cosine"))
def _text(name: str, p: TextParams, r: SignalResources) -> Scorer:
    return TextCosineScorer(
        p.user_vector,
        p.history_length,
        r.encoder,
        r.item_vectors,
        half_life=p.half_life,
        profile_weight=p.profile_weight,
        name=name,
    )


@register_signal("popularity", PopularityParams, needs_logs=True)
def _popularity(name: str, p: PopularityParams, r: SignalResources) -> Scorer:
    return PopularityScorer(p.window, blend=p.blend, name=name)


@register_signal("cooccurrence", CooccurrenceParams, needs_logs=True)
def _cooccurrence(name: str, p: CooccurrenceParams, r: SignalResources) -> Scorer:
    return CooccurrenceScorer(
        p.recent,
        p.decay,
        p.normalise,
        window=p.window,
        backward=p.backward,
        position_decay=p.position_decay,
        time_window=p.time_window,
        alpha=p.alpha,
        user_weight=p.user_weight,
        name=name,
    )


@register_signal("user_filtering", UserFilteringParams, needs_logs=True)
def _user_filtering(name: str, p: UserFilteringParams, r: SignalResources) -> Scorer:
    return UserFilteringScorer(p.neighbours, p.include_self, name=name)


@register_signal("item_filtering", ItemFilteringParams, needs_logs=True)
def _item_filtering(name: str, p: ItemFilteringParams, r: SignalResources) -> Scorer:
    return ItemFilteringScorer(p.neighbours, recent=p.recent, name=name)


@register_signal("group_popularity", GroupPopularityParams, needs_logs=True)
def _group_popularity(name: str, p: GroupPopularityParams, r: SignalResources) -> Scorer:
    return GroupPopularityScorer(p.group_by, banded=p.banded, band_width=p.band_width, name=name)


@register_signal("llm", LLMParams, needs_logs=False, candidates=True)
def _llm(name: str, p: LLMParams, r: SignalResources) -> Scorer:
    if r.llm is None:
        raise ConfigError(f"signal {name!r} is an LLM signal, but no LLM candidate scorer was given")
    return LLMScorer(r.llm, r.llm_candidates, p.n_candidates, floor_margin=p.floor_margin, name=name)
