"""A trained hybrid yardstick for cold items: LightFM-style factorisation with item features, on torch.

An item is the sum of a linear map of its features (text embedding + catalog attributes,
:func:`~zsgen.score.transfer.features.item_features`) and, when it has training interactions, an id embedding
(Kula 2015's LightFM, whose item is the sum of its feature embeddings); an item without interactions is scored
from its features alone. A user is their id embedding when the user has a training row, plus the mean of their
history items' representations (so a query with an unknown user still has a vector). Trained with BPR (one
negative per positive, drawn among the items with interactions: an item nobody has touched is unknown, not
disliked), seeded, on each training sequence minus its last event, early-stopped on that held-out event's NDCG
over the full catalog (:mod:`zsgen.baselines.holdout`), as SASRec is; the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from zsgen.baselines.config import HybridConfig
from zsgen.baselines.holdout import last_event_holdout, validation_ndcg
from zsgen.catalog import Catalog
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, history_matrix, not_fitted, require_logs
from zsgen.score.transfer.features import item_features, resolve_vectors

logger = logging.getLogger(__name__)


class HybridScorer:
    """A :class:`~zsgen.score.base.Scorer` (module docstring); ``training`` records what early stopping chose."""

    needs_logs = True

    def __init__(
        self,
        config: HybridConfig | None = None,
        *,
        seed: int = 0,
        item_vectors: npt.ArrayLike | None = None,
        name: str = "hybrid",
    ) -> None:
        self.config = config or HybridConfig()
        self.seed = self.config.seed if self.config.seed is not None else seed
        self.name = name
        self._given = item_vectors
        self._items: npt.NDArray[np.float64] | None = None
        self._users: npt.NDArray[np.float64] | None = None
        self._bias: npt.NDArray[np.float64] | None = None
        self.training: dict[str, Any] = {}

    def fit(self, catalog: Catalog, train: TrainData | None) -> HybridScorer:
        import torch

        train = require_logs(self.name, train, catalog)
        features = item_features(catalog, resolve_vectors(catalog, self._given, None, f"ranker {self.name!r}"))
        holdout = last_event_holdout(train)
        config = self.config
        start = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            torch.manual_seed(self.seed)
            rng = np.random.default_rng(self.seed)
            n_users, n_items = holdout.train.n_users, train.n_items
            feats = torch.tensor(features, dtype=torch.float32)
            counts = np.asarray(holdout.train.incidence().sum(axis=0)).ravel()
            warm = torch.tensor(counts > 0, dtype=torch.float32)[:, None]
            warm_items = np.flatnonzero(counts > 0)
            map_ = torch.nn.Linear(features.shape[1], config.factors, bias=False)
            bias_map = torch.nn.Linear(features.shape[1], 1)
            item_ids = torch.nn.Embedding(n_items, config.factors)
            user_ids = torch.nn.Embedding(n_users, config.factors)
            for table in (item_ids, user_ids):
                torch.nn.init.normal_(table.weight, std=0.01)
            params = [*map_.parameters(), *bias_map.parameters(), item_ids.weight, user_ids.weight]
            optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.l2)
            users = np.repeat(np.arange(n_users), [s.size for s in holdout.train.sequences])
            positives = np.concatenate(holdout.train.sequences)

            def items() -> tuple[Any, Any]:
                return map_(feats) + warm * item_ids.weight, bias_map(feats).squeeze(1)

            best: tuple[float, int, Any] = (-1.0, 0, None)
            waited, epochs = 0, 0
            for epoch in range(1, config.epochs + 1):
                epochs = epoch
                order = rng.permutation(users.size)
                for begin in range(0, order.size, config.batch_size):
                    batch = order[begin : begin + config.batch_size]
                    u = torch.tensor(users[batch])
                    pos = torch.tensor(positives[batch])
                    neg = torch.tensor(rng.choice(warm_items, size=batch.size))
                    vectors, bias = items()
                    user = user_ids(u)
                    margin = (user * (vectors[pos] - vectors[neg])).sum(1) + bias[pos] - bias[neg]
                    loss = -torch.nn.functional.logsigmoid(margin).mean()
                    optimiser.zero_grad()
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimiser.step()
                with torch.no_grad():
                    vectors, bias = items()
                self._set(vectors.numpy(), user_ids.weight.detach().numpy(), bias.numpy())
                ndcg = validation_ndcg(self.score(holdout.queries), holdout, config.validation_k)
                if ndcg > best[0]:
                    state = (vectors.numpy(), user_ids.weight.detach().numpy(), bias.numpy())
                    best, waited = (ndcg, epoch, copy.deepcopy(state)), 0
                else:
                    waited += 1
                    if waited >= config.patience:
                        break
            assert best[2] is not None
            self._set(*best[2])
        finally:
            torch.set_num_threads(threads)
        self.training = {
            "epochs": epochs,
            "best_epoch": best[1],
            "validation": round(best[0], 6),
            "seconds": round(time.perf_counter() - start, 1),
        }
        logger.info("%s: %d epochs, best %d (validation ndcg %.4f)", self.name, epochs, best[1], best[0])
        return self

    def _set(self, items: Any, users: Any, bias: Any) -> None:
        self._items = np.asarray(items, dtype=np.float64)
        self._users = np.asarray(users, dtype=np.float64)
        self._bias = np.asarray(bias, dtype=np.float64)

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._items is None or self._users is None or self._bias is None:
            raise not_fitted(self.name)
        weights = history_matrix(queries, self._items.shape[0], decay=1.0)
        lengths = np.maximum(np.asarray(weights.sum(axis=1)).ravel(), 1.0)
        users = np.asarray(weights @ self._items) / lengths[:, None]
        for row, query in enumerate(queries):
            if query.user is not None and query.user < self._users.shape[0]:
                users[row] += self._users[query.user]
        return np.asarray(users @ self._items.T + self._bias[None, :], dtype=np.float64)
