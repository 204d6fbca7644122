"""``zsgen encode``: embed a catalog once so that later commands start from the cache.

Encoding a large catalog is the slow part of a first ``recommend``; doing it ahead (in a build step, or after a
catalog update, when only changed items are encoded again) keeps interactive commands fast.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from zsgen.cli.common import add_catalog_options, encoder_from, load_dataset_from

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``encode``."""
    p = subparsers.add_parser(
        "encode",
        help="pre-compute and cache a catalog's item embeddings",
        description="Embed every item of a catalog into the embedding cache; items whose text is unchanged are "
        "read from the cache, not encoded again.",
    )
    add_catalog_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Encode the catalog's item texts (as retrieval renders them) and say how many came from the cache."""
    from zsgen.itemtext import ItemTextTemplate

    catalog = load_dataset_from(args).catalog
    encoder = encoder_from(args)
    texts = ItemTextTemplate().render_all(catalog)
    vectors = encoder.encode(texts, progress=args.verbosity >= 0)  # -q: no progress bar
    stats = getattr(encoder, "last_stats", None)
    line = f"encoded {vectors.shape[0]} items, {vectors.shape[1]} dimensions, encoder {encoder.identity}"
    if stats is not None:
        line += f": {stats.hits} from cache, {stats.encoded} newly encoded"
    print(line)
    return 0
