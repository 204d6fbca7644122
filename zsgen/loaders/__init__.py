"""Reading catalogs and interaction logs into :class:`~zsgen.interactions.Dataset`.

Layouts: JSON Lines and CSV/TSV (with a :class:`ColumnMapping`), GroupLens MovieLens (ml-100k, ml-1m, ml-latest)
and RecBole atomic files. :func:`load_dataset` picks the layout from the path. Every malformed input raises
:class:`~zsgen.errors.DataError` (or a subclass) naming the file, the 1-based line and the field.
"""

from zsgen.loaders.auto import FORMATS, detect_format, load_catalog, load_dataset, load_interactions
from zsgen.loaders.delimited import load_csv_catalog, load_csv_interactions
from zsgen.loaders.demo import DemoUser, demo_catalog_path, load_demo, load_demo_user
from zsgen.loaders.jsonl import load_jsonl_catalog, load_jsonl_interactions
from zsgen.loaders.mapping import ColumnMapping, InteractionMapping
from zsgen.loaders.movielens import load_ml1m, load_ml100k, load_ml_latest, load_movielens
from zsgen.loaders.recbole import load_recbole

__all__ = [
    "FORMATS",
    "ColumnMapping",
    "DemoUser",
    "InteractionMapping",
    "demo_catalog_path",
    "detect_format",
    "load_catalog",
    "load_csv_catalog",
    "load_csv_interactions",
    "load_dataset",
    "load_demo",
    "load_demo_user",
    "load_interactions",
    "load_jsonl_catalog",
    "load_jsonl_interactions",
    "load_ml1m",
    "load_ml100k",
    "load_ml_latest",
    "load_movielens",
    "load_recbole",
]
