"""The LLM reranking stage, one module per part of it:

* :mod:`.prompt` — a template's variables and messages for one user and one shown order (:func:`build_messages`);
* :mod:`.methods` — one class per reranking method (listwise, recency, in_context, nir, verbalizer, pointwise), each
  declaring the templates it renders, the ``output:`` it reads and the backend it needs, in the :data:`METHODS`
  registry;
* :mod:`.constraints` — the answer shape a structured-output server is asked to enforce (:func:`ranking_schema`);
* :mod:`.aggregate` — Borda count, weighted reciprocal-rank fusion, distinct shuffles;
* :mod:`.parse` and :mod:`.labels` — reading an answer back as a permutation, recording every repair;
* :mod:`.config` and :mod:`.reranker` — the settings, and the :class:`Reranker` that runs rounds and falls back.
"""

from zsgen.rerank.aggregate import borda, cosine_order, distinct_permutations, order_by, weighted_rrf
from zsgen.rerank.config import BackendName, RerankConfig
from zsgen.rerank.constraints import ranking_schema
from zsgen.rerank.labels import LabelStyle, make_labels
from zsgen.rerank.methods import METHODS, RerankMethod, RerankRequest, method_class
from zsgen.rerank.parse import ParsedRanking, parse_ranking, parse_single_label
from zsgen.rerank.prompt import build_messages, item_view, prompt_variables
from zsgen.rerank.reranker import Reranker

__all__ = [
    "METHODS",
    "BackendName",
    "LabelStyle",
    "ParsedRanking",
    "RerankConfig",
    "RerankMethod",
    "RerankRequest",
    "Reranker",
    "borda",
    "build_messages",
    "cosine_order",
    "distinct_permutations",
    "item_view",
    "make_labels",
    "method_class",
    "order_by",
    "parse_ranking",
    "parse_single_label",
    "prompt_variables",
    "ranking_schema",
    "weighted_rrf",
]
