"""Fused generators and rankers in a run: each fusion config is loaded and, unless told not to, tuned first.

Tuning reads only the validation split (each user's second-to-last event is the target and the test event is cut
off before anything is fitted, see :func:`zsgen.evaluate.tuning.tune_on_validation`), so the test targets a run
reports on never choose a weight. The tuned config is written beside the results as ``fusion-NAME.toml``: the file
``zsgen recommend --fusion`` takes, and the record of which weights produced the numbers.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsgen.catalog import Catalog
from zsgen.evaluate.config import COLD_PROTOCOLS, IMPUTING, CandidateConfig, EvalConfig
from zsgen.evaluate.generators import CandidateList, ScorerFactory, build_generator
from zsgen.evaluate.ranker_config import FusedRankerConfig, FusionOptions
from zsgen.interactions import Interactions
from zsgen.loaders.spec import relative_path
from zsgen.metrics.split import Split
from zsgen.score.config import FusionConfig
from zsgen.score.registry import signal_kind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFusion:
    """The fusion config a generator (``key == "candidates"``) or fused ranker (``key`` its name) runs with."""

    key: str
    config: FusionConfig
    source: Path
    source_hash: str
    written: Path | None = None

    def provenance(self, out_dir: Path) -> dict[str, Any]:
        """The fusion's record in the resolved config; paths relative to ``out_dir``, where that config lies."""
        record: dict[str, Any] = {
            "source": relative_path(self.source, out_dir),
            "source_hash": self.source_hash,
            "weights": {name: self.config.weight(name) for name in self.config.signals},
        }
        if self.written is not None:
            record["tuned_file"] = relative_path(self.written, out_dir)
        if self.config.tuned is not None:
            record["validation"] = {"metric": self.config.tuned.metric, "value": self.config.tuned.value}
        return record


def fusion_specs(config: EvalConfig) -> list[tuple[str, FusionOptions]]:
    """Every part of the run that names a fusion config, keyed as :class:`RunFusion` is."""
    specs: list[tuple[str, FusionOptions]] = []
    if config.candidates.generator == "fused":
        specs.append(("candidates", config.candidates))
    specs += [(r.name, r) for r in config.rankers if isinstance(r, FusedRankerConfig)]
    return specs


def fusion_hashes(config: EvalConfig) -> list[str]:
    """Content digests of the fusion files: an edited file must not resume into the old results."""
    return [_digest(Path(str(spec.fusion))) for _, spec in fusion_specs(config)]


def resolve_fusions(
    config: EvalConfig,
    catalog: Catalog,
    interactions: Interactions,
    factory: ScorerFactory,
    out_dir: Path,
    *,
    data_source: str | None = None,
) -> dict[str, RunFusion]:
    """Load (and tune) every fusion config of the run; :func:`write_tuned` saves the tuned ones once the output
    folder is known to belong to this run. ``data_source`` is how the tuned files name the dataset they were tuned
    on (relative to ``out_dir``, where they are written)."""
    from zsgen.evaluate.tuning import tune_on_validation

    resolved: dict[str, RunFusion] = {}
    for key, spec in fusion_specs(config):
        source = Path(str(spec.fusion))
        fusion = FusionConfig.load(source)
        digest = _digest(source)
        if not spec.tune:
            resolved[key] = RunFusion(key, fusion, source, digest)
            continue
        if config.split == "validation":
            logger.warning("%s: tuning and evaluating on the same validation split; the numbers are optimistic", key)
        uses_text = any(signal_kind(signal.kind).uses_text for signal in fusion.signals.values())
        tuned, result = tune_on_validation(
            fusion,
            catalog,
            interactions,
            metric=spec.tune_metric,
            seed=config.seed,
            source=data_source if data_source is not None else config.dataset.path,
            encoder=factory.encoder,
            item_vectors=factory.item_vectors() if uses_text else None,
            **(
                cold_tuning_task(config, catalog, interactions, factory, resolved)
                if config.protocol in COLD_PROTOCOLS
                else tuning_task(config, key, factory, resolved)
            ),
        )
        written = out_dir / f"fusion-{_slug(key)}.toml"
        logger.info(
            "%s: validation %s %.4f after %d trials; weights %s",
            key,
            result.metric,
            result.val_metric,
            len(result.trials),
            result.weights,
        )
        resolved[key] = RunFusion(key, tuned, source, digest, written)
    return resolved


def tuning_task(
    config: EvalConfig, key: str, factory: ScorerFactory, resolved: Mapping[str, RunFusion]
) -> dict[str, Any]:
    """What the fusion ``key`` is tuned on, so that its tuned value is the value the run reports for it on the
    validation split: the lists the run's generator makes there, ranked as the run's rankers rank them.

    - the fused generator itself (``key == "candidates"``) lists its own top ``n``: the full catalog, ranks from
      ``n`` on count as misses;
    - a fused ranker over the full catalog: the full catalog;
    - over LLMRank's random lists: the same seeded lists (the ``sampled`` protocol);
    - over any other generator: that generator, fitted on the validation training data (for a fused generator, with
      its tuned weights), run on the validation cases.
    """
    candidates = config.candidates
    if key == "candidates":
        return {"protocol": "full_catalog", "max_rank": candidates.n}
    if candidates.generator == "full_catalog":
        return {"protocol": "full_catalog"}
    if candidates.generator == "random":
        return {"protocol": "sampled", "n_candidates": candidates.n}
    fusion = resolved["candidates"].config if candidates.generator == "fused" else None

    def lists(split: Split) -> list[CandidateList]:
        generator = build_generator(candidates, factory.with_train(split.train), seed=config.seed, fusion=fusion)
        return generator.generate(split.cases)

    return {"candidates": lists}


def cold_tuning_task(
    config: EvalConfig,
    catalog: Catalog,
    interactions: Interactions,
    factory: ScorerFactory,
    resolved: Mapping[str, RunFusion] | None = None,
) -> dict[str, Any]:
    """What a fused ranker of a cold-start run is tuned on: the protocol's validation split, built from warm data only
    (a second cold set carved out of the warm items or users, :mod:`zsgen.evaluate.coldstart`), each case's
    candidates listed as the run lists them (every cold item of that split, every item outside the history, or the
    run's generator fitted on that split's training data and restricted to its cold items; a fused generator, the one
    tuned, lists every cold item of the split)."""
    from zsgen.evaluate.coldstart import cold_split

    split = cold_split(config, catalog, interactions, "validation")
    fusion = resolved["candidates"].config if resolved and "candidates" in resolved else None

    def lists(split: Split) -> list[CandidateList]:
        if config.candidates.generator == "fused" and fusion is None:  # the fused generator itself is being tuned:
            whole = CandidateConfig(generator="full_catalog")  # on every cold item of the split
            generator = build_generator(whole, factory, seed=config.seed, items=split.candidate_items)
        else:
            generator = build_generator(
                config.candidates,
                factory.with_train(split.train),
                seed=config.seed,
                fusion=fusion,
                items=split.candidate_items,
            )
        return generator.generate(split.cases)

    # Tuned as the run ranks: where the run's fused scorers impute items without interactions, so do the tuned ones.
    return {"split": split, "candidates": lists, "impute_cold": config.protocol in IMPUTING}


def write_tuned(fusions: Mapping[str, RunFusion]) -> None:
    for fusion in fusions.values():
        if fusion.written is not None:
            fusion.config.save(fusion.written)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "fused"
