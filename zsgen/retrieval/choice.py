"""Which first stage a recommender gets when it is not handed one: the strong one where the data allow it.

Text similarity alone is weak on data with an interaction log (on ML-100K MiniLM cosine loses to popularity, and the
fused first stage is five times better on NDCG@10), so a log means the fused first stage with the weights zsgen ships
(:meth:`~zsgen.score.config.FusionConfig.packaged`). The rule, in one place for the Python API
(:class:`~zsgen.recommender.Recommender`) and ``zsgen recommend``:

- ``first_stage="cosine"``: text similarity (:class:`~zsgen.retrieval.cosine.Retriever`), log or not. A fusion
  config given with it contradicts it (:class:`~zsgen.errors.ConfigError`).
- ``first_stage="fused"``, or a ``fusion`` config or file: the fused first stage, with that config, else with the
  packaged weights. The packaged weights are log-based; without a log they would leave text cosine under another
  name, so that is a ConfigError. A fusion config of one's own works without a log on its text signals, as before.
  Options that only describe the cosine retriever (``user_vector``, ``history_length``, ``text_template``) are
  refused: a fused stage's text signals carry their own.
- Neither (``None``): fused with the packaged weights when there is a log, text similarity when there is none (what
  every recommender without a log got before the default existed). Cosine options given without a choice keep the
  cosine stage they describe: ``user_vector``, ``history_length``, ``text_template``, and ``threshold``, which is in
  the stage's own score scale and was written for cosine similarity.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from zsgen.errors import ConfigError
from zsgen.retrieval.base import FirstStage
from zsgen.retrieval.cosine import Retriever

if TYPE_CHECKING:
    from zsgen.catalog import Catalog
    from zsgen.embed.base import Encoder
    from zsgen.interactions import Interactions
    from zsgen.itemtext import ItemTextTemplate
    from zsgen.score.config import FusionConfig
    from zsgen.user_vectors import UserVector

logger = logging.getLogger(__name__)

FirstStageName = Literal["cosine", "fused"]
FIRST_STAGES: tuple[FirstStageName, ...] = get_args(FirstStageName)

#: Options of the cosine retriever alone: a fused stage's text signals take theirs from the fusion config.
COSINE_ONLY = ("user_vector", "history_length", "text_template", "index")
#: What makes an unstated choice stay cosine: the options above, and a threshold in cosine's scale.
COSINE_HINTS = (*COSINE_ONLY, "threshold")


def choose_first_stage(
    first_stage: str | None,
    *,
    has_log: bool,
    has_fusion: bool,
    options: Mapping[str, object] | None = None,
) -> FirstStageName:
    """The first stage the rule in the module docstring picks; ConfigError for a contradiction.

    ``options`` maps the cosine options to the values given (``None`` = not given).
    """
    given = [name for name, value in (options or {}).items() if value is not None]
    if first_stage is not None and first_stage not in FIRST_STAGES:
        raise ConfigError(f"first_stage must be one of {', '.join(FIRST_STAGES)}; got {first_stage!r}")
    if first_stage == "cosine":
        if has_fusion:
            raise ConfigError(
                "first_stage='cosine' contradicts the fusion config given (a fusion config is a fused first stage): "
                "give one or the other"
            )
        return "cosine"
    if first_stage == "fused" or has_fusion:
        refused = [name for name in given if name in COSINE_ONLY]
        if refused:
            raise ConfigError(
                f"the fused first stage cannot honour {', '.join(refused)}: its text signals take user_vector and "
                "history_length from the fusion config (first_stage='cosine' for text similarity with them)"
            )
        if not has_fusion and not has_log:
            raise ConfigError(
                "the fused first stage with the packaged default weights needs an interaction log "
                "(interactions=...); without one use text similarity (first_stage='cosine') or a fusion config of "
                "your own"
            )
        return "fused"
    hints = [name for name in given if name in COSINE_HINTS]
    if has_log and not hints:
        logger.info("first stage: fused with the packaged default weights (there is an interaction log)")
        return "fused"
    if has_log:
        logger.info("first stage: cosine, kept by %s (they describe text similarity)", ", ".join(hints))
    return "cosine"


def build_first_stage(
    catalog: Catalog,
    *,
    first_stage: str | None = None,
    interactions: Interactions | None = None,
    fusion: FusionConfig | str | Path | None = None,
    encoder: Encoder | None = None,
    user_vector: UserVector | None = None,
    history_length: int | None = None,
    text_template: ItemTextTemplate | None = None,
    threshold: float | None = None,
    index: str | None = None,
) -> FirstStage:
    """Choose (:func:`choose_first_stage`) and build the first stage; the encoder defaults to the packaged MiniLM.

    ``fusion`` is a :class:`~zsgen.score.config.FusionConfig` or the path of a TOML/JSON one (a tuned
    ``fusion-NAME.toml``); its weights' origin is recorded on the stage for a ranking's provenance.
    """
    options = {
        "user_vector": user_vector,
        "history_length": history_length,
        "text_template": text_template,
        "threshold": threshold,
        "index": index,
    }
    choice = choose_first_stage(
        first_stage, has_log=interactions is not None, has_fusion=fusion is not None, options=options
    )
    if encoder is None:
        from zsgen.embed import default_encoder

        encoder = default_encoder()
    if choice == "cosine":
        return Retriever(
            catalog,
            encoder,
            text_template=text_template,
            user_vector=user_vector if user_vector is not None else "mean",
            history_length=history_length,
            index_backend=index if index is not None else "numpy",
        )
    from zsgen.retrieval.fused import FusedRetriever  # imports zsgen.score, which imports this package
    from zsgen.score.config import FusionConfig

    if fusion is None:
        return FusedRetriever.packaged(catalog, interactions, encoder=encoder)
    if isinstance(fusion, FusionConfig):
        return FusedRetriever(catalog, fusion, interactions, encoder=encoder)
    if isinstance(fusion, str | Path):
        return FusedRetriever.from_file(fusion, catalog, interactions, encoder=encoder)
    raise ConfigError(f"fusion must be a FusionConfig or the path of a fusion config file, got {type(fusion).__name__}")
