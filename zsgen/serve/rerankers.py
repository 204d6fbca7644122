"""Rerankers per request: the configured one, or a variant with the options a request may set, sharing one backend.

A request may change what is asked (``candidates``, ``bootstrap``, ...; the config's ``per_request`` list) but not
whom: every variant is a :class:`~zsgen.rerank.Reranker` over the one backend built at start (one HTTP client, one
concurrency bound on LLM calls, one loaded local model). Variants are cached per (catalog version, options, and the
requested template file's modification stamp), so a steady stream of requests builds none, an item edit, which gives
a new catalog, gets fresh ones, and so does a template file saved again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zsgen.catalog import Catalog
from zsgen.rerank import RerankConfig, Reranker
from zsgen.serve.errors import ApiError
from zsgen.templates import TEMPLATE_SUFFIX

__all__ = ["RerankerPool"]

#: Variants kept; a request mix with more distinct option sets than this rebuilds some (cheap: templates only).
CACHED = 64


class RerankerPool:
    """The configured reranker and its per-request variants (module docstring)."""

    def __init__(self, config: RerankConfig, catalog: Catalog, *, allowed: Sequence[str] = ()) -> None:
        self.config = config
        self.allowed = tuple(allowed)
        self.base = Reranker(config, catalog=catalog)
        #: The one model client every variant uses; building it loads a local model and checks the method fits it.
        self.backend = self.base.backend
        self._version = 0
        self._cache: OrderedDict[tuple[int, tuple[int, int], tuple[tuple[str, Any], ...]], Reranker] = OrderedDict()

    def get(self, catalog: Catalog, version: int, options: Mapping[str, Any]) -> Reranker:
        """The reranker for ``options`` over ``catalog`` (its edit ``version``). An option the config does not allow
        per request, or a value the reranker refuses, is an :class:`~zsgen.serve.errors.ApiError` (422)."""
        refused = sorted(set(options) - set(self.allowed))
        if refused:
            allowed = ", ".join(self.allowed) or "none"
            raise ApiError(
                422,
                "rerank_option_not_allowed",
                f"rerank option {', '.join(refused)} cannot be set per request here (allowed: {allowed})",
            )
        if version != self._version:  # an item edit: variants over the old catalog are of no more use
            self._cache.clear()
            self._version = version
        key = (version, self._template_stamp(options.get("template")), tuple(sorted(options.items())))
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        config = RerankConfig.model_validate({**self.config.model_dump(), **options})  # ConfigError: the caller's
        reranker = Reranker(config, catalog=catalog, backend=self.backend)
        self._cache[key] = reranker
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return reranker

    def _template_stamp(self, name: Any) -> tuple[int, int]:
        """When and how big the template folder's file for a requested ``template`` is (zeros: none there).

        Part of the cache key, so that a template saved again (the prompt playground's "save" with overwrite) is read
        again by the next request naming it; the configured reranker keeps the templates it loaded at start."""
        if not isinstance(name, str) or self.config.template_dir is None:
            return (0, 0)
        try:
            found = (Path(self.config.template_dir) / f"{name}{TEMPLATE_SUFFIX}").stat()
        except (OSError, ValueError):
            return (0, 0)
        return (found.st_mtime_ns, found.st_size)

    async def aclose(self) -> None:
        """Close the shared backend (its HTTP connections); the variants hold nothing else."""
        self._cache.clear()
        await self.base.aclose()
