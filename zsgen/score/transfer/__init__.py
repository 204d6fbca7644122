"""Cold-item signals: score an item from its text and attributes through what the warm log learnt.

Each is a :class:`~zsgen.score.base.Scorer` with a typed config (a ``kind`` discriminator), fitted on the warm
training interactions only (items without interactions never enter a fit as targets), and gives items with and
without interactions scores on one scale, so a fused first stage ranks them in one list (DESIGN.md §2, lesson 11):

- :class:`PredictedPopularityScorer` (``predicted_popularity``): ``log1p`` user count regressed on text + attributes;
- :class:`TextFactorScorer` (``text_factors``): Gantner et al.'s attribute-to-factor map onto PureSVD item factors;
- :class:`NeighbourTransferScorer` (``neighbour_transfer``): co-occurrence scores inherited from text neighbours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zsgen.configbase import validate_config
from zsgen.score.transfer.neighbours import NeighbourTransferConfig, NeighbourTransferScorer
from zsgen.score.transfer.popularity_model import PredictedPopularityConfig, PredictedPopularityScorer
from zsgen.score.transfer.text_factors import TextFactorConfig, TextFactorScorer

if TYPE_CHECKING:
    import numpy.typing as npt

    from zsgen.embed.base import Encoder
    from zsgen.score.base import Scorer

__all__ = [
    "TRANSFER_KINDS",
    "NeighbourTransferConfig",
    "NeighbourTransferScorer",
    "PredictedPopularityConfig",
    "PredictedPopularityScorer",
    "TextFactorConfig",
    "TextFactorScorer",
    "build_transfer_signal",
]

# -- the one entry point the fusion's signal factory calls (a thin adapter for a signal registry) ------------------

#: Signal kind → (config model, scorer class).
TRANSFER_KINDS: dict[str, tuple[Any, Any]] = {
    "predicted_popularity": (PredictedPopularityConfig, PredictedPopularityScorer),
    "text_factors": (TextFactorConfig, TextFactorScorer),
    "neighbour_transfer": (NeighbourTransferConfig, NeighbourTransferScorer),
}


def build_transfer_signal(
    name: str,
    kind: str,
    params: Mapping[str, Any],
    *,
    encoder: Encoder | None = None,
    item_vectors: npt.ArrayLike | None = None,
) -> Scorer:
    """An unfitted transfer scorer for a fusion signal of ``kind`` with ``params`` (validated by its config model;
    a misspelt key is named)."""
    config_model, scorer_class = TRANSFER_KINDS[kind]
    config = validate_config(config_model, {"kind": kind, **params}, what=f"signal {name!r} ({kind})")
    scorer: Scorer = scorer_class(config, encoder=encoder, item_vectors=item_vectors, name=name)
    return scorer
