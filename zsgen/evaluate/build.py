"""Building an evaluation run's rankers from its config: baselines, scorer rankers, fused, trained and LLM rankers.

Kept apart from :mod:`zsgen.evaluate.runner` (which runs them) so that how a ranker kind is built has one home.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.evaluate.config import EvalConfig
from zsgen.evaluate.fusion import RunFusion
from zsgen.evaluate.generators import ScorerFactory
from zsgen.evaluate.ranker_config import (
    FusedRankerConfig,
    LLMRankerConfig,
    PlainRankerConfig,
    RankerConfig,
    SignalRankerConfig,
    TrainedRankerConfig,
)
from zsgen.evaluate.rankers import GeneratorOrderRanker, LLMRanker, RandomRanker, Ranker, ScorerRanker
from zsgen.interactions import Interactions
from zsgen.score.base import Scorer

if TYPE_CHECKING:
    from zsgen.rerank import RerankConfig, Reranker

logger = logging.getLogger(__name__)

#: The response cache of a run's LLM rankers, in its output folder (unless a rerank table names one).
CACHE_NAME = "llm_cache.sqlite"

#: Builds the reranker of an LLM ranker (its name, its resolved settings, the catalog) in place of the one its
#: settings describe: batch export and import (:mod:`zsgen.batch`) hand in rerankers whose backend records requests
#: or replays a batch file's answers, so everything else about the run stays exactly as ``zsgen evaluate`` does it.
RerankerFactory = Callable[[str, "RerankConfig", Catalog], "Reranker"]


@dataclass(frozen=True)
class RankerContext:
    """What building a ranker may use: the run's config, data and scorer factory, its output folder (the LLM
    response cache), the fusion configs loaded (tuned) for fused rankers, and the batch-file hooks
    (see :func:`build_rankers`)."""

    config: EvalConfig
    catalog: Catalog
    interactions: Interactions
    factory: ScorerFactory
    out_dir: Path
    fusions: Mapping[str, RunFusion]
    progress: bool = False
    rerankers: RerankerFactory | None = None
    timed: bool = True


def build_rankers(
    config: EvalConfig,
    catalog: Catalog,
    interactions: Interactions,
    factory: ScorerFactory,
    out_dir: Path,
    fusions: Mapping[str, RunFusion] | None = None,
    *,
    progress: bool = False,
    rerankers: RerankerFactory | None = None,
    timed: bool = True,
) -> list[Ranker]:
    """Every configured ranker, fitted; LLM rankers share the response cache in ``out_dir`` unless one is set.
    ``fusions`` holds the (tuned) fusion config of each fused ranker, by name. Trained baselines (``ease``,
    ``sasrec``) are trained here, on the factory's training data only; ``progress`` shows their training bar.
    ``rerankers`` and ``timed`` are for batch files (see :data:`RerankerFactory` and
    :class:`~zsgen.evaluate.rankers.LLMRanker`)."""
    context = RankerContext(
        config, catalog, interactions, factory, out_dir, fusions or {}, progress, rerankers=rerankers, timed=timed
    )
    return [build_ranker(spec, context) for spec in config.rankers]


@singledispatch
def build_ranker(spec: RankerConfig, context: RankerContext) -> Ranker:
    """The ranker one config describes, dispatched on its config model: a plug-in ranker kind registers its model
    (:func:`zsgen.evaluate.ranker_config.register_ranker_kind`) and a builder here (``@build_ranker.register``)."""
    raise ConfigError(f"ranker {spec.name!r}: no builder for kind {spec.kind!r} is registered")


@build_ranker.register
def _plain(spec: PlainRankerConfig, context: RankerContext) -> Ranker:
    if spec.kind == "random":
        return RandomRanker(spec.name, context.config.seed)
    return GeneratorOrderRanker(spec.name)


@build_ranker.register
def _fused(spec: FusedRankerConfig, context: RankerContext) -> Ranker:
    if spec.name not in context.fusions:
        raise ConfigError(f"ranker {spec.name!r}: its fusion config was not loaded")
    return ScorerRanker(spec.name, spec.kind, context.factory.fitted("fused", fusion=context.fusions[spec.name].config))


@build_ranker.register
def _trained(spec: TrainedRankerConfig, context: RankerContext) -> Ranker:
    scorer = trained_scorer(spec, context.config, context.factory, progress=context.progress)
    return ScorerRanker(spec.name, spec.kind, scorer)


@build_ranker.register
def _llm(spec: LLMRankerConfig, context: RankerContext) -> Ranker:
    config = context.config
    # The cosine order LLM rankers fall back to: the baseline text ranker's, else the text signal's defaults.
    baseline = next((r for r in config.rankers if r.name == config.baseline and r.kind == "text"), None)
    fallback = baseline.params() if isinstance(baseline, SignalRankerConfig) else {}
    return LLMRanker(
        spec.name,
        build_reranker(spec, config, context.catalog, context.out_dir, context.rerankers),
        catalog=context.catalog,
        interactions=context.interactions,
        seed=config.seed,
        cosine=context.factory.signal("text", fallback),
        timed=context.timed,
    )


@build_ranker.register
def _signal(spec: SignalRankerConfig, context: RankerContext) -> Ranker:
    """Any registered signal kind (:mod:`zsgen.score.registry`), built by its one factory with the table's params."""
    return ScorerRanker(spec.name, spec.kind, context.factory.signal(spec.kind, spec.params()))


def trained_scorer(spec: TrainedRankerConfig, config: EvalConfig, factory: ScorerFactory, *, progress: bool) -> Scorer:
    """A trained baseline (:mod:`zsgen.baselines`) fitted on the run's training split, the data every other signal
    of the run is fitted on, so no evaluation target reaches it; a SASRec seed left unset is the run's seed."""
    from zsgen.baselines import EASEScorer, SASRecScorer
    from zsgen.baselines.config import EASEConfig, HybridConfig, model_config
    from zsgen.baselines.hybrid import HybridScorer

    options = model_config(spec.kind, spec.model, what=f"ranker {spec.name!r}: invalid model table")
    logger.info("training %s (%s) on %d users' training events", spec.name, spec.kind, factory.train.n_users)
    scorer: EASEScorer | SASRecScorer | HybridScorer
    if isinstance(options, EASEConfig):
        scorer = EASEScorer(options, name=spec.name)
    elif isinstance(options, HybridConfig):
        scorer = HybridScorer(options, seed=config.seed, item_vectors=factory.item_vectors(), name=spec.name)
    else:
        scorer = SASRecScorer(options, seed=config.seed, name=spec.name, progress=progress)
    return scorer.fit(factory.catalog, factory.train)


def rerank_settings(spec: LLMRankerConfig, config: EvalConfig, out_dir: Path) -> dict[str, Any]:
    """The ranker's rerank table with what the run decides: history length, list size, seed, cache file."""
    settings = dict(spec.rerank)
    settings.setdefault("history_length", config.history_length)
    settings.setdefault("candidates", config.candidates.n)
    settings.setdefault("seed", config.seed)
    settings.setdefault("cache", str(out_dir / CACHE_NAME))
    return settings


def build_reranker(
    spec: LLMRankerConfig,
    config: EvalConfig,
    catalog: Catalog,
    out_dir: Path,
    rerankers: RerankerFactory | None = None,
) -> Reranker:
    from zsgen.rerank import RerankConfig, Reranker

    try:
        rerank_config = RerankConfig(**rerank_settings(spec, config, out_dir))
    except ConfigError as exc:  # RerankConfig is a StrictConfig: its message already locates every problem
        raise ConfigError(f"ranker {spec.name!r}: {exc}") from None
    if rerankers is not None:
        reranker = rerankers(spec.name, rerank_config, catalog)
    else:
        reranker = Reranker(rerank_config, catalog=catalog)
    # Build the client or load the model now: a missing API key or model is a setup error to report before the first
    # user, not a fault every user would silently fall back on.
    _ = reranker.backend
    return reranker
