"""Cold-item signals: score an item from its text and attributes through what the warm log learnt.

Each is a :class:`~zsgen.score.base.Scorer` with a typed config (a ``kind`` discriminator), fitted on the warm
training interactions only (items without interactions never enter a fit as targets), and gives items with and
without interactions scores on one scale, so a fused first stage ranks them in one list (DESIGN.md §2, lesson 11):

- :class:`PredictedPopularityScorer` (``predicted_popularity``): ``log1p`` user count regressed on text + attributes;
- :class:`TextFactorScorer` (``text_factors``): Gantner et al.'s attribute-to-factor map onto PureSVD item factors;
- :class:`NeighbourTransferScorer` (``neighbour_transfer``): co-occurrence scores inherited from text neighbours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import create_model

from zsgen.configbase import StrictConfig, validate_config
from zsgen.score.registry import SignalParams, SignalResources, register_signal
from zsgen.score.transfer.neighbours import NeighbourTransferConfig, NeighbourTransferScorer
from zsgen.score.transfer.popularity_model import PredictedPopularityConfig, PredictedPopularityScorer
from zsgen.score.transfer.text_factors import TextFactorConfig, TextFactorScorer

if TYPE_CHECKING:
    from zsgen.score.base import Scorer

__all__ = [
    "NeighbourTransferConfig",
    "NeighbourTransferScorer",
    "PredictedPopularityConfig",
    "PredictedPopularityScorer",
    "TextFactorConfig",
    "TextFactorScorer",
]

# -- registered as signal kinds (zsgen.score.registry) ---------------------------------------------------------


def _register(kind: str, config_model: type[StrictConfig], scorer_class: Any) -> None:
    """Register ``kind``: its parameters are its config model's fields but ``kind``; its factory builds the scorer
    from the full config (defaults for every key the fusion config leaves out)."""
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in config_model.model_fields.items() if name != "kind"
    }
    params = create_model(f"{config_model.__name__.removesuffix('Config')}Params", __base__=SignalParams, **fields)

    def build(name: str, given: SignalParams, resources: SignalResources) -> Scorer:
        config = validate_config(config_model, {"kind": kind, **given.given()}, what=f"signal {name!r} ({kind})")
        scorer: Scorer = scorer_class(config, encoder=resources.encoder, item_vectors=resources.item_vectors, name=name)
        return scorer

    register_signal(kind, params, needs_logs=True, uses_text=True)(build)


_register("predicted_popularity", PredictedPopularityConfig, PredictedPopularityScorer)
_register("text_factors", TextFactorConfig, TextFactorScorer)
_register("neighbour_transfer", NeighbourTransferConfig, NeighbourTransferScorer)
