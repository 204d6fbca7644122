"""The pipeline users call: resolve the user, retrieve candidates, optionally rerank, return a Ranking.

``recommend`` raises only for the caller's mistakes (unknown items, no history and no profile, bad k). Anything the
language model does wrong ends as a cosine-order ranking flagged ``fallback=True``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zsgen.catalog import Catalog
from zsgen.embed import Encoder
from zsgen.errors import ConfigError, EmptyHistoryError, InvalidKError
from zsgen.itemtext import ItemTextTemplate
from zsgen.lifecycle import Closing
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieval import FirstStage, Request, Retriever, UserVector
from zsgen.retrieval.choice import FirstStageName, build_first_stage
from zsgen.types import Candidate, History, Interaction, Item, Profile, RankedItem, Ranking

if TYPE_CHECKING:
    from zsgen.interactions import Interactions
    from zsgen.score.config import FusionConfig

HistoryInput = History | Sequence[str] | None
ProfileInput = Profile | str | None

__all__ = ["FirstStage", "FirstStageName", "HistoryInput", "ProfileInput", "Recommender", "Request"]


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
        their warm text neighbours (:meth:`zsgen.retrieval.fused.FusedRetriever.with_items`; a fusion with transfer
        or LLM signals is refitted instead). Returns the new items' ids. Raises
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

    def resolve_history(self, history: HistoryInput) -> History:
        """Accept a History, or ids / titles as a user would type them (titles resolved with suggestions)."""
        if history is None:
            return History()
        if isinstance(history, History):
            for event in history.interactions:
                self.catalog.index_of(event.item_id)
            return history
        return History(interactions=[Interaction(item_id=self.catalog.resolve(key)) for key in history])

    def recommend(self, history: HistoryInput = None, *, profile: ProfileInput = None, k: int = 10) -> Ranking:
        """Rank the items this user most likely wants next (see class docstring for the two stages)."""
        resolved, user_profile = self.prepare(history, profile, k)
        start = time.perf_counter()
        pool = max(k, self.candidates or k) if self.reranker else k
        pool = min(pool, self._rankable(resolved))
        candidates = self.retriever.retrieve(resolved, user_profile, k=pool, threshold=self.threshold)
        retrieve_s = time.perf_counter() - start
        if self.reranker is None:
            ranking = self.first_stage_ranking(candidates)
        else:
            ranking = self.reranker.rerank(resolved, candidates, profile=user_profile)
        return self.finish(ranking, k, retrieve_s)

    def recommend_batch(
        self, requests: Sequence[Request], *, k: int = 10, keys: Sequence[str] | None = None
    ) -> list[Ranking]:
        """Many users at once: retrieval in one matrix pass, reranking concurrently where the backend allows.

        A request's history may hold ids or titles, as for :meth:`recommend`. ``keys`` name the users for backends
        that label their requests (batch files, :mod:`zsgen.rerank.scope`)."""
        prepared = [self.prepare(r.history, r.profile, k) for r in requests]
        start = time.perf_counter()
        pools = []
        for resolved, _ in prepared:
            pool = max(k, self.candidates or k) if self.reranker else k
            pools.append(min(pool, self._rankable(resolved)))
        candidate_lists = self.retriever.retrieve_batch(
            [Request(h, p) for h, p in prepared], k=pools, threshold=self.threshold
        )
        retrieve_s = (time.perf_counter() - start) / max(len(requests), 1)
        if self.reranker is None:
            rankings = [self.first_stage_ranking(cands) for cands in candidate_lists]
        else:
            rankings = self.reranker.rerank_many(
                [(h, c, p) for (h, p), c in zip(prepared, candidate_lists, strict=True)], keys=keys
            )
        return [self.finish(r, k, retrieve_s) for r in rankings]

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

        Public, with :meth:`prepare` and :meth:`first_stage_ranking`, so that a caller who runs the stages itself
        (the HTTP service micro-batches retrieval and awaits the reranker under a deadline) builds the very same
        Ranking as :meth:`recommend`."""
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
        rankable = self._rankable(resolved)
        if k > rankable:
            raise InvalidKError(f"k={k} is larger than the {rankable} items this user has not seen")
        return resolved, user_profile

    def _rankable(self, history: History) -> int:
        return len(self.catalog) - len(set(history.item_ids))


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
