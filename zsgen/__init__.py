"""zsgen: zero-shot next-item recommendation with embedding retrieval and LLM reranking.

The public surface is importable from here — ``from zsgen import Recommender, RerankConfig, load_dataset`` — without
knowing which submodule holds what. Every name is imported lazily, on first use: ``import zsgen`` loads no
submodule (not even pydantic), so code that only catches :class:`ZsgenError` or reads ``__version__`` pays for
nothing it does not use, and torch and transformers load only when a local model runs. Type checkers read the
``TYPE_CHECKING`` imports below and see the real classes (and flag a misspelt name).
"""

import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:
    from zsgen.catalog import Catalog
    from zsgen.embed import CachedEncoder, EmbeddingCache, Encoder, OpenAIEmbeddingEncoder, TransformersEncoder
    from zsgen.errors import (
        BackendError,
        ConfigError,
        DataError,
        DuplicateItemError,
        EmptyHistoryError,
        EmptyTextError,
        EncoderError,
        InvalidKError,
        LabelTokenError,
        LLMError,
        LogprobsUnavailableError,
        ParseError,
        TemplateError,
        UnknownItemError,
        ZsgenError,
    )
    from zsgen.interactions import Dataset, Interactions
    from zsgen.itemtext import ItemTextTemplate
    from zsgen.loaders import ColumnMapping, InteractionMapping, load_dataset, load_demo
    from zsgen.recommender import Recommender
    from zsgen.rerank import RerankConfig, Reranker
    from zsgen.retrieval import FirstStage, FusedRetriever, Request, Retriever
    from zsgen.score.config import FusionConfig
    from zsgen.templates import PromptLibrary
    from zsgen.types import Candidate, History, Interaction, Item, Profile, RankedItem, Ranking, Usage

    __version__: str

# Where each public name lives: the one table to edit when a module moves.
_HOMES: dict[str, str] = {
    # the pipeline
    "Recommender": "zsgen.recommender",
    "Request": "zsgen.retrieval",
    "FirstStage": "zsgen.retrieval",
    "Retriever": "zsgen.retrieval",
    "FusedRetriever": "zsgen.retrieval",
    "FusionConfig": "zsgen.score.config",
    "RerankConfig": "zsgen.rerank",
    "Reranker": "zsgen.rerank",
    "PromptLibrary": "zsgen.templates",
    # data
    "load_dataset": "zsgen.loaders",
    "load_demo": "zsgen.loaders",
    "ColumnMapping": "zsgen.loaders",
    "InteractionMapping": "zsgen.loaders",
    "Catalog": "zsgen.catalog",
    "Dataset": "zsgen.interactions",
    "Interactions": "zsgen.interactions",
    "ItemTextTemplate": "zsgen.itemtext",
    # encoders
    "Encoder": "zsgen.embed",
    "TransformersEncoder": "zsgen.embed",
    "OpenAIEmbeddingEncoder": "zsgen.embed",
    "CachedEncoder": "zsgen.embed",
    "EmbeddingCache": "zsgen.embed",
    # values
    "Item": "zsgen.types",
    "Interaction": "zsgen.types",
    "History": "zsgen.types",
    "Profile": "zsgen.types",
    "Candidate": "zsgen.types",
    "RankedItem": "zsgen.types",
    "Ranking": "zsgen.types",
    "Usage": "zsgen.types",
    # errors (the tree is drawn in zsgen/errors.py)
    "ZsgenError": "zsgen.errors",
    "ConfigError": "zsgen.errors",
    "DataError": "zsgen.errors",
    "DuplicateItemError": "zsgen.errors",
    "EmptyTextError": "zsgen.errors",
    "UnknownItemError": "zsgen.errors",
    "EmptyHistoryError": "zsgen.errors",
    "InvalidKError": "zsgen.errors",
    "TemplateError": "zsgen.errors",
    "EncoderError": "zsgen.errors",
    "LLMError": "zsgen.errors",
    "BackendError": "zsgen.errors",
    "LabelTokenError": "zsgen.errors",
    "LogprobsUnavailableError": "zsgen.errors",
    "ParseError": "zsgen.errors",
}

__all__ = [
    "BackendError",
    "CachedEncoder",
    "Candidate",
    "Catalog",
    "ColumnMapping",
    "ConfigError",
    "DataError",
    "Dataset",
    "DuplicateItemError",
    "EmbeddingCache",
    "EmptyHistoryError",
    "EmptyTextError",
    "Encoder",
    "EncoderError",
    "FirstStage",
    "FusedRetriever",
    "FusionConfig",
    "History",
    "Interaction",
    "InteractionMapping",
    "Interactions",
    "InvalidKError",
    "Item",
    "ItemTextTemplate",
    "LLMError",
    "LabelTokenError",
    "LogprobsUnavailableError",
    "OpenAIEmbeddingEncoder",
    "ParseError",
    "Profile",
    "PromptLibrary",
    "RankedItem",
    "Ranking",
    "Recommender",
    "Request",
    "RerankConfig",
    "Reranker",
    "Retriever",
    "TemplateError",
    "TransformersEncoder",
    "UnknownItemError",
    "Usage",
    "ZsgenError",
    "load_dataset",
    "load_demo",
]


# Hidden from type checkers: a module-level __getattr__ would make every misspelt ``zsgen.Name`` type-check as Any;
# without it they see exactly the names imported under TYPE_CHECKING above.
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        """Import a public name's home module on first access and keep the value here, so later accesses are plain."""
        if name == "__version__":
            value: _typing.Any = _version()
        elif name in _HOMES:
            value = getattr(_import_module(_HOMES[name]), name)
        else:
            raise AttributeError(f"module 'zsgen' has no attribute {name!r}")
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    """The public names (resolved or not), submodules already imported, and the module's dunders."""
    public = (name for name in globals() if not name.startswith("_") or name.startswith("__"))
    return sorted({*public, *__all__, "__version__"})


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed, the one in pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zsgen")
    except PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    try:
        project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return "0+unknown"
    meta = project.get("project", {})
    return str(meta["version"]) if meta.get("name") == "zsgen" and "version" in meta else "0+unknown"
