"""The pipeline users call: resolve the user, retrieve candidates, optionally rerank, return a Ranking.

Async first: :meth:`Recommender.arecommend_batch` is the one implementation of the online pipeline (candidate pool,
first stage, rerank under an optional deadline, fallback, timings); :meth:`~Recommender.arecommend` is it for one
user, and the synchronous :meth:`~Recommender.recommend` / :meth:`~Recommender.recommend_batch` run it on zsgen's
portal loop. The HTTP service, its prompt playground and the bulk engines all call these, so a user gets the same
ranking whichever door they come through.

``recommend`` raises only for the caller's mistakes (unknown items, no history and no profile, bad k). Anything the
language model does wrong ends as a cosine-order ranking flagged ``fallback=True``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zsgen._sync import run_sync
from zsgen.catalog import Catalog
from zsgen.embed import Encoder
from zsgen.errors import ConfigError, EmptyHistoryError, InvalidKError
from zsgen.itemtext import ItemTextTemplate
from zsgen.lifecycle import Closing
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieval import FirstStage, Request, Retriever, UserVector
from zsgen.retrieval.base import aretrieve_batch, available, check_requests, per_request_k
from zsgen.retrieval.choice import FirstStageName, build_first_stage
from zsgen.types import Candidate, History, Interaction, Item, Profile, RankedItem, Ranking

if TYPE_CHECKING:
    from zsgen.interactions import Interactions
    from zsgen.score.config import FusionConfig

HistoryInput = History | Sequence[str] | None
ProfileInput = Profile | str | None

__all__ = ["FirstStage", "FirstStageName", "HistoryInput", "ProfileInput", "Recommender", "Request"]

logger = logging.getLogger(__name__)

#: Rerankers whose backend is built and checked: building one may load a model, which is done once, off the loop.
_READY: weakref.WeakSet[Reranker] = weakref.WeakSet()


class Recommender(Closing):
    """Retrieval by a first stage, then (optionally) LLM reranking of the top candidates.

    The first stage is ``retriever`` (any :class:`~zsgen.retrieval.FirstStage`), or, when none is given, one chosen
    and built here (:mod:`zsgen.retrieval.choice`):

    - with an ``interactions`` log, the fused first stage (:class:`~zsgen.retrieval.FusedRetriever`: text cosine,
      co-occurrence, user filtering, ...) with the weights zsgen ships
      (:meth:`~zsgen.score.config.FusionConfig.packaged`, chosen on ML-100K's validation split); without one, text
      similarity (the cosine :class:`~zsgen.retrieval.Retriever`), as always;
    - ``first_stage="cosine"`` or ``"fused"`` says which; ``fusion`` (a :class:`~zsgen.score.config.FusionConfig` or
      the path of a tuned ``fusion-NAME.toml``) gives the fused stage those weights instead of the packaged ones;
    - ``encoder`` serves either stage (default: the packaged all-MiniLM-L6-v2). ``text_template``, ``user_vector``
      (default ``mean``) and ``history_length`` configure the cosine retriever, and given without a
      ``first_stage`` they keep it (so does ``threshold``, which is in the stage's own score scale); with a fused
      stage they are a :class:`~zsgen.errors.ConfigError`, its text signals carrying their own.

    Those options only describe a first stage built here, so giving any of them together with a ``retriever`` is a
    ConfigError (set them on that first stage instead) rather than silently unused. ``threshold`` applies to any
    first stage.

    Without a reranker the ranking is the first stage's order itself (items carry ``source="cosine"``, or
    ``"fusion"`` from a fused first stage; the ranking's ``first_stage`` and ``fusion_weights`` say which stage and
    which weights). With one, ``candidates`` items are retrieved and reranked, and the first ``k`` returned.

    From async code await :meth:`arecommend` / :meth:`arecommend_batch` (and ``async with`` / :meth:`aclose`); the
    synchronous methods block the calling thread until the pipeline, run on zsgen's portal loop, is done.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        encoder: Encoder | None = None,
        retriever: FirstStage | None = None,
        reranker: Reranker | RerankConfig | None = None,
        user_vector: UserVector | None = None,
        history_length: int | None = None,
        threshold: float | None = None,
        text_template: ItemTextTemplate | None = None,
        candidates: int | None = None,
        interactions: Interactions | None = None,
        first_stage: FirstStageName | None = None,
        fusion: FusionConfig | str | Path | None = None,
        index: str | None = None,
    ) -> None:
        self.catalog = catalog
        if retriever is None:
            retriever = build_first_stage(
                catalog,
                first_stage=first_stage,
                interactions=interactions,
                fusion=fusion,
                encoder=encoder,
                user_vector=user_vector,
                history_length=history_length,
                text_template=text_template,
                threshold=threshold,
                index=index,
            )
        elif not isinstance(retriever, FirstStage):
            raise ConfigError(
                f"retriever must be a first stage (zsgen.retrieval.FirstStage), got {type(retriever).__name__}"
            )
        else:
            _refuse_choice(interactions=interactions, first_stage=first_stage, fusion=fusion)
            _refuse_cosine_options(
                retriever,
                encoder=encoder,
                text_template=text_template,
                user_vector=user_vector,
                history_length=history_length,
                index=index,
            )
        self.retriever: FirstStage = retriever
        if isinstance(reranker, RerankConfig):
            reranker = Reranker(reranker, catalog=catalog)
        self.reranker = reranker
        self.threshold = threshold
        self._given_candidates = candidates
        self.candidates = candidates if candidates is not None else (reranker.config.candidates if reranker else None)

    @property
    def fusion_weights(self) -> str | None:
        """Where the fused first stage's weights came from (``packaged``, a file's path, ``given``); ``None`` for
        any other first stage."""
        origin = getattr(self.retriever, "weights_origin", None) if self.retriever.source == "fusion" else None
        return str(origin) if origin is not None else None

    def add_items(self, items: Iterable[Item]) -> list[str]:
        """Add new items (no interactions yet) to the catalog; the first stage ranks them at once, with nothing
        refitted: the cosine stage encodes their text, the fused stage also imputes their log-signal scores from
        their warm text neighbours and scores them through its transfer signals' learnt maps
        (:meth:`zsgen.retrieval.fused.FusedRetriever.with_items`; a fusion with LLM signals is refitted instead).
        Returns the new items' ids. Raises
        :class:`~zsgen.errors.DuplicateItemError` for an id the catalog has, :class:`~zsgen.errors.ConfigError` for
        a first stage that cannot add items."""
        new = list(items)
        add = getattr(self.retriever, "add_items", None)
        if not callable(add):
            raise ConfigError(f"the first stage {type(self.retriever).__name__} cannot add items")
        catalog = self.catalog.with_items(new)  # raises DuplicateItemError before the stage changes
        add(new)
        self.catalog = catalog
        if self.reranker is not None:
            self.reranker.catalog = catalog
            self.reranker.method.catalog = catalog
        return [item.id for item in new]

    def close(self) -> None:
        """Release the reranker's backend (its HTTP connections); using the recommender again reopens them."""
        if self.reranker is not None:
            self.reranker.close()

    async def aclose(self) -> None:
        if self.reranker is not None:
            await self.reranker.aclose()

    def resolve_history(self, history: HistoryInput) -> History:
        """Accept a History, or ids / titles as a user would type them (titles resolved with suggestions)."""
        if history is None:
            return History()
        if isinstance(history, History):
            for event in history.interactions:
                self.catalog.index_of(event.item_id)
            return history
        return History(interactions=[Interaction(item_id=self.catalog.resolve(key)) for key in history])

    def recommend(
        self, history: HistoryInput = None, *, profile: ProfileInput = None, k: int = 10, timeout: float | None = None
    ) -> Ranking:
        """Rank the items this user most likely wants next: :meth:`arecommend` run to its end from synchronous code
        (on zsgen's portal loop, :mod:`zsgen._sync`)."""
        return run_sync(self.arecommend(history, profile=profile, k=k, timeout=timeout))

    def recommend_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 10,
        keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[Ranking]:
        """Many users at once (:meth:`arecommend_batch` from synchronous code): retrieval in one matrix pass,
        reranking concurrently where the backend allows.

        A request's history may hold ids or titles, as for :meth:`recommend`. ``k`` is one value for all users or one
        each; ``keys`` name the users for backends that label their requests (batch files,
        :mod:`zsgen.rerank.scope`); ``timeout`` bounds the reranker as in :meth:`arecommend`."""
        return run_sync(self.arecommend_batch(requests, k=k, keys=keys, timeout=timeout))

    async def arecommend(
        self, history: HistoryInput = None, *, profile: ProfileInput = None, k: int = 10, timeout: float | None = None
    ) -> Ranking:
        """:meth:`recommend` for async code (FastAPI, notebooks): the one implementation of the pipeline.

        ``timeout`` (seconds from this call) bounds the reranker: past it, the model's calls are cancelled and the
        ranking is the first stage's order flagged ``fallback`` with reason ``deadline`` (its ``rerank_s`` the time
        it was given). Retrieval is never cut short: without candidates there is nothing to return."""
        [ranking] = await self.arecommend_batch([Request(history, profile)], k=k, timeout=timeout)
        return ranking

    async def arecommend_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 10,
        keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[Ranking]:
        """The pipeline (class docstring) for many users: every user checked first (the caller's mistakes raise
        before any work), one first-stage pass for all of them (in a worker thread, or through the stage's own
        ``aretrieve_batch``), then the reranker, a few users at a time (twice its ``concurrency``).

        ``k`` is one value for all users or one each; ``keys`` and ``timeout`` as for :meth:`recommend_batch` and
        :meth:`arecommend`. An LLM fault never raises: the user's ranking is the flagged first-stage order."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        batch = check_requests(requests)
        ks = per_request_k(k, len(batch))
        if keys is not None and len(keys) != len(batch):
            raise ConfigError(f"recommend_batch: {len(keys)} keys for {len(batch)} requests")
        prepared = [self.prepare(r.history, r.profile, want) for r, want in zip(batch, ks, strict=True)]
        reranker = self.reranker
        pools = []
        for (resolved, _), want in zip(prepared, ks, strict=True):
            pool = max(want, self.candidates or want) if reranker is not None else want
            pools.append(min(pool, self._available(resolved)))
        start = time.perf_counter()
        candidate_lists = await aretrieve_batch(
            self.retriever, [Request(h, p) for h, p in prepared], k=pools, threshold=self.threshold
        )
        retrieve_s = (time.perf_counter() - start) / max(len(batch), 1)
        if reranker is None:
            rankings = [self.first_stage_ranking(cands) for cands in candidate_lists]
        else:
            await _ready(reranker)
            gate = asyncio.Semaphore(2 * reranker.config.concurrency) if len(batch) > 1 else None
            names: Sequence[str | None] = keys if keys is not None else [None] * len(batch)
            rankings = list(
                await asyncio.gather(
                    *(
                        _rerank(reranker, h, c, p, key=key, deadline=deadline, gate=gate)
                        for (h, p), c, key in zip(prepared, candidate_lists, names, strict=True)
                    )
                )
            )
        return [self.finish(r, want, retrieve_s) for r, want in zip(rankings, ks, strict=True)]

    def with_reranker(self, reranker: Reranker | None) -> Recommender:
        """This recommender (same catalog, same first stage) with ``reranker`` instead of its own, or none.

        Cheap (nothing is built): the HTTP service makes one per request option set, the playground one per edited
        template. The candidate pool follows the new reranker's ``candidates`` unless this recommender was given its
        own. Closing the copy closes the reranker it was given."""
        clone = copy.copy(self)
        clone.reranker = reranker
        clone.candidates = self._given_candidates
        if clone.candidates is None and reranker is not None:
            clone.candidates = reranker.config.candidates
        return clone

    def first_stage_ranking(self, candidates: Sequence[Candidate]) -> Ranking:
        """The first stage's order as a Ranking (what :meth:`recommend` returns without a reranker)."""
        return Ranking(
            items=[
                RankedItem(id=c.id, title=self.catalog.get(c.id).title, score=c.score, source=self.retriever.source)
                for c in candidates
            ]
        )

    def finish(self, ranking: Ranking, k: int, retrieve_s: float) -> Ranking:
        """Cut to ``k``, with the retrieval time and which first stage (and weights) produced the candidates.

        Every ranking :meth:`arecommend_batch` returns ends here."""
        timings = {"retrieve_s": retrieve_s, **ranking.timings}
        return ranking.model_copy(
            update={
                "items": ranking.items[:k],
                "timings": timings,
                "first_stage": self.retriever.source,
                "fusion_weights": self.fusion_weights,
            }
        )

    def prepare(self, history: HistoryInput, profile: ProfileInput, k: int) -> tuple[History, Profile | None]:
        """The user as the first stage takes them (titles resolved), or the caller's mistake as a typed error:
        :class:`~zsgen.errors.UnknownItemError`, :class:`~zsgen.errors.EmptyHistoryError`,
        :class:`~zsgen.errors.InvalidKError`."""
        resolved = self.resolve_history(history)
        # A blank profile says nothing about the user: it counts as no profile (pydantic's Profile would reject it
        # with a ValidationError, which is no ZsgenError and reached the CLI as a traceback).
        if isinstance(profile, str):
            blank = not profile.strip()
            user_profile = None if blank else Profile(text=profile)
        else:
            blank, user_profile = False, profile
        if len(resolved) == 0 and user_profile is None:
            given = " (the profile given is blank)" if blank else ""
            raise EmptyHistoryError(f"give a history (item ids or titles) or a profile text{given}")
        if k < 1:
            raise InvalidKError(f"k must be at least 1, got {k}")
        rankable = self._available(resolved)
        if k > rankable:
            raise InvalidKError(f"k={k} is larger than the {rankable} items this user can be recommended")
        return resolved, user_profile

    def _available(self, history: History) -> int:
        """Items neither seen nor excluded by the first stage (retired: `retrieval.base.available`)."""
        return available(self.retriever, len(self.catalog), history.item_ids)


async def _ready(reranker: Reranker) -> None:
    """Build (a local model loads) and check the reranker's backend in a worker thread, once: a configuration error
    (labels the model cannot produce) raises here, before any user is ranked, and the event loop never waits on it."""
    if reranker not in _READY:
        await asyncio.to_thread(lambda: reranker.backend)
        _READY.add(reranker)


async def _rerank(
    reranker: Reranker,
    history: History,
    candidates: list[Candidate],
    profile: Profile | None,
    *,
    key: str | None,
    deadline: float | None,
    gate: asyncio.Semaphore | None,
) -> Ranking:
    """One user's rerank, bounded by ``deadline`` (the running loop's clock); any fault is a flagged fallback."""
    start = time.perf_counter()

    async def gated() -> Ranking:
        if gate is None:
            return await reranker.arerank(history, candidates, profile=profile, key=key)
        async with gate:
            return await reranker.arerank(history, candidates, profile=profile, key=key)

    try:
        if deadline is None:
            return await gated()
        return await asyncio.wait_for(gated(), max(deadline - asyncio.get_running_loop().time(), 0.0))
    except TimeoutError:
        logger.info("rerank passed its deadline: first-stage order")
        ranking = reranker.fallback_ranking(candidates, "deadline")
        timings = {**ranking.timings, "rerank_s": time.perf_counter() - start}  # the time it was given
        return ranking.model_copy(update={"timings": timings})
    except ConfigError:  # the caller's mistake (a template that does not render), not the model's fault
        raise
    except Exception as exc:  # the reranker turns LLM faults into fallbacks; anything left must become one too
        logger.error("rerank failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        return reranker.fallback_ranking(candidates, "backend_exception")


def _refuse_choice(**choice: object) -> None:
    """Raise for the options that choose and build a first stage when the caller brought one: they would be unused."""
    given = [name for name, value in choice.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: these choose the first stage the Recommender builds when given none; with "
            "retriever=... the first stage is already chosen (build it with them instead)"
        )


def _refuse_cosine_options(stage: FirstStage, **options: object) -> None:
    """Raise for options of the cosine retriever built here when the caller brought their own first stage: passing
    them on is impossible (a first stage is configured when it is built) and dropping them would be a silent lie."""
    given = [name for name, value in options.items() if value is not None]
    if not given:
        return
    names = ", ".join(given)
    kind = type(stage).__name__
    if isinstance(stage, Retriever):
        raise ConfigError(
            f"{names}: these configure the cosine retriever the Recommender builds when given none; with "
            f"retriever={kind}(...) give them to that {kind} when building it"
        )
    hint = (
        "; its text signals take user_vector and history_length from the fusion config"
        if stage.source == "fusion"
        else ""
    )
    raise ConfigError(f"the {stage.source} first stage {kind} cannot honour {names}{hint}")
