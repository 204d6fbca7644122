"""The pipeline users call: resolve the user, retrieve candidates, optionally rerank, return a Ranking.

``recommend`` raises only for the caller's mistakes (unknown items, no history and no profile, bad k). Anything the
language model does wrong ends as a cosine-order ranking flagged ``fallback=True``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zsgen.catalog import Catalog
from zsgen.embed import Encoder, default_encoder
from zsgen.errors import EmptyHistoryError, InvalidKError
from zsgen.itemtext import ItemTextTemplate
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieve import Retriever, UserVector
from zsgen.types import Candidate, History, Interaction, Profile, RankedItem, Ranking, Source

HistoryInput = History | Sequence[str] | None
ProfileInput = Profile | str | None


@dataclass(frozen=True)
class Request:
    """One user in a batch: a history (ids or titles, oldest first), a profile text, or both."""

    history: HistoryInput = None
    profile: ProfileInput = None


class FirstStage(Protocol):
    """What the recommender needs from a first stage: :class:`~zsgen.retrieve.Retriever` (cosine) or
    :class:`zsgen.score.retriever.FusedRetriever` (tuned multi-signal fusion). ``source`` labels its items."""

    source: Source

    def retrieve(
        self,
        history: History | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        user_vector: UserVector = "mean",
        threshold: float | None = None,
        history_length: int | None = None,
    ) -> list[Candidate]: ...

    def retrieve_batch(
        self,
        requests: Sequence[Any],
        *,
        k: int | Sequence[int] = 20,
        user_vector: UserVector = "mean",
        threshold: float | None = None,
        history_length: int | None = None,
    ) -> list[list[Candidate]]: ...


class Recommender:
    """Retrieval by embedding similarity, then (optionally) LLM reranking of the top candidates.

    Without a reranker the ranking is the first stage's order itself (items carry ``source="cosine"``, or
    ``"fusion"`` from a fused first stage). With one, ``candidates`` items are retrieved and reranked, and the first
    ``k`` returned.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        encoder: Encoder | None = None,
        retriever: FirstStage | None = None,
        reranker: Reranker | RerankConfig | None = None,
        user_vector: UserVector = "mean",
        history_length: int | None = None,
        threshold: float | None = None,
        text_template: ItemTextTemplate | None = None,
        candidates: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.retriever: FirstStage = retriever or Retriever(
            catalog, encoder if encoder is not None else default_encoder(), text_template=text_template
        )
        if isinstance(reranker, RerankConfig):
            reranker = Reranker(reranker, catalog=catalog)
        self.reranker = reranker
        self.user_vector: UserVector = user_vector
        self.history_length = history_length
        self.threshold = threshold
        self.candidates = candidates if candidates is not None else (reranker.config.candidates if reranker else None)

    def close(self) -> None:
        """Release the reranker's backend (its HTTP connections); using the recommender again reopens them."""
        if self.reranker is not None:
            self.reranker.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        resolved, user_profile = self._prepare(history, profile, k)
        start = time.perf_counter()
        pool = max(k, self.candidates or k) if self.reranker else k
        pool = min(pool, self._rankable(resolved))
        candidates = self.retriever.retrieve(
            resolved,
            user_profile,
            k=pool,
            user_vector=self.user_vector,
            threshold=self.threshold,
            history_length=self.history_length,
        )
        retrieve_s = time.perf_counter() - start
        if self.reranker is None:
            ranking = Ranking(
                items=[
                    RankedItem(
                        id=c.id,
                        title=self.catalog.get(c.id).title,
                        score=c.score,
                        source=self.retriever.source,
                    )
                    for c in candidates
                ]
            )
        else:
            ranking = self.reranker.rerank(resolved, candidates, profile=user_profile)
        return _truncate(ranking, k, retrieve_s)

    def recommend_batch(self, requests: Sequence[Request], *, k: int = 10) -> list[Ranking]:
        """Many users at once: retrieval in one matrix pass, reranking concurrently where the backend allows."""
        prepared = [self._prepare(r.history, r.profile, k) for r in requests]
        start = time.perf_counter()
        pools = []
        for resolved, _ in prepared:
            pool = max(k, self.candidates or k) if self.reranker else k
            pools.append(min(pool, self._rankable(resolved)))
        candidate_lists = self.retriever.retrieve_batch(
            [(h, p) for h, p in prepared],
            k=pools,
            user_vector=self.user_vector,
            threshold=self.threshold,
            history_length=self.history_length,
        )
        retrieve_s = (time.perf_counter() - start) / max(len(requests), 1)
        if self.reranker is None:
            rankings = [
                Ranking(
                    items=[
                        RankedItem(
                            id=c.id,
                            title=self.catalog.get(c.id).title,
                            score=c.score,
                            source=self.retriever.source,
                        )
                        for c in cands
                    ]
                )
                for cands in candidate_lists
            ]
        else:
            rankings = self.reranker.rerank_many(
                [(h, c, p) for (h, p), c in zip(prepared, candidate_lists, strict=True)]
            )
        return [_truncate(r, k, retrieve_s) for r in rankings]

    def _prepare(self, history: HistoryInput, profile: ProfileInput, k: int) -> tuple[History, Profile | None]:
        resolved = self.resolve_history(history)
        user_profile = Profile(text=profile) if isinstance(profile, str) else profile
        if len(resolved) == 0 and user_profile is None:
            raise EmptyHistoryError("give a history (item ids or titles) or a profile text")
        if k < 1:
            raise InvalidKError(f"k must be at least 1, got {k}")
        rankable = self._rankable(resolved)
        if k > rankable:
            raise InvalidKError(f"k={k} is larger than the {rankable} items this user has not seen")
        return resolved, user_profile

    def _rankable(self, history: History) -> int:
        return len(self.catalog) - len(set(history.item_ids))


def _truncate(ranking: Ranking, k: int, retrieve_s: float) -> Ranking:
    timings = {"retrieve_s": retrieve_s, **ranking.timings}
    return ranking.model_copy(update={"items": ranking.items[:k], "timings": timings})
