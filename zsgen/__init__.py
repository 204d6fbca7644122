"""zsgen: zero-shot next-item recommendation with embedding retrieval and LLM reranking."""

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
    ParseError,
    TemplateError,
    UnknownItemError,
    ZsgenError,
)
from zsgen.types import Candidate, History, Interaction, Item, Profile, RankedItem, Ranking, Usage

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Candidate",
    "ConfigError",
    "DataError",
    "DuplicateItemError",
    "EmptyHistoryError",
    "EmptyTextError",
    "EncoderError",
    "History",
    "Interaction",
    "InvalidKError",
    "Item",
    "LLMError",
    "LabelTokenError",
    "ParseError",
    "Profile",
    "RankedItem",
    "Ranking",
    "TemplateError",
    "UnknownItemError",
    "Usage",
    "ZsgenError",
]
