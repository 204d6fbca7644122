"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation") with a full-softmax cross-entropy loss.

A causal transformer reads the user's last ``max_length`` items and predicts the next one at every position; the
logits are the dot products of the last hidden state with the (tied) item embeddings. Training with cross-entropy
over *all* items instead of the original one-negative binary loss is what Klenitskiy & Vasilev (RecSys 2023, "Turning
Dross Into Gold Loss: is BERT4Rec really better than SASRec?") showed makes SASRec a strong baseline; on a catalog
of a few thousand items the full softmax is cheap on a CPU.

Training uses each training sequence minus its last event (:mod:`zsgen.baselines.holdout`); that held-out event is
ranked over the full catalog after every epoch, and the weights of the best epoch by NDCG are kept (early stopping
with ``patience``). Scoring feeds the query's whole visible history. Everything random (initialisation, dropout,
batch order) draws from ``seed``, deterministic algorithms are switched on and the thread count is fixed while the
model trains or scores, so a seed gives the same scores on every run on one machine.

torch is imported inside the functions, never at module level: ``import zsgen`` must not need it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from zsgen.baselines.config import SASRecConfig
from zsgen.baselines.holdout import Holdout, last_event_holdout, validation_ndcg
from zsgen.baselines.unseen import floor_unseen, trained_items
from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.score.base import IndexArray, ScoreMatrix, TrainData, UserQuery, not_fitted, require_logs

logger = logging.getLogger(__name__)

#: Users scored per forward pass when scoring or validating.
SCORE_BATCH = 256


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError("the sasrec baseline needs torch; install zsgen[local]") from None
    return torch


def build_model(n_items: int, config: SASRecConfig) -> Any:
    """The network; item ``i`` is token ``i + 1`` (0 pads)."""
    torch = _import_torch()
    nn = torch.nn

    class SASRec(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
            self.positions = nn.Embedding(config.max_length, config.hidden)
            self.dropout = nn.Dropout(config.dropout)
            layer = nn.TransformerEncoderLayer(
                d_model=config.hidden,
                nhead=config.heads,
                dim_feedforward=config.hidden,  # the paper's point-wise feed-forward keeps the width
                dropout=config.dropout,
                activation="relu",
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(config.hidden)
            # Small initial embeddings: N(0, 1) rows (torch's default) start the logits at a scale of sqrt(hidden)
            # and the softmax saturated, which stalls training for many epochs.
            nn.init.normal_(self.items.weight, std=0.02)
            nn.init.normal_(self.positions.weight, std=0.02)
            with torch.no_grad():
                self.items.weight[0].zero_()

        def forward(self, tokens: Any) -> Any:
            """Hidden states ``(batch, length, hidden)`` of left-padded token rows."""
            length = tokens.shape[1]
            positions = torch.arange(length, device=tokens.device)
            x = self.items(tokens) * math.sqrt(config.hidden) + self.positions(positions)[None]
            x = self.dropout(x)
            padding = tokens == 0
            # Causal, and no attending to padding, except that a padding position attends to itself: a row with
            # nothing to attend to would give NaN, which would leak through the zero weights of later rows.
            blocked = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)[None]
            blocked = blocked | padding[:, None, :]
            blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=tokens.device)[None]
            mask = torch.zeros(blocked.shape, dtype=x.dtype).masked_fill(blocked, float("-inf"))
            mask = mask.repeat_interleave(config.heads, dim=0)
            return self.norm(self.encoder(x, mask=mask))

        def logits(self, hidden: Any) -> Any:
            """Scores of every item (without the padding token) for hidden states ``(..., hidden)``."""
            return hidden @ self.items.weight[1:].T

    return SASRec()


def left_padded(sequences: Sequence[IndexArray], length: int) -> np.ndarray:
    """Token rows: each sequence's last ``length`` items shifted by one, padded with 0 on the left."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        tail = np.asarray(sequence, dtype=np.int64)[-length:]
        if tail.size:
            out[row, length - tail.size :] = tail + 1
    return out


@contextlib.contextmanager
def _reproducible(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the duration, restored afterwards."""
    torch = _import_torch()
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


class SASRecScorer:
    """A SASRec model trained on the :class:`TrainData` it is fitted on; see the module docstring.

    ``seed`` (when the config leaves it ``None``) is the evaluation run's seed. ``progress`` shows a bar over
    epochs. :attr:`training` records the epochs run, the best one, its validation NDCG and the seconds spent.
    """

    needs_logs = True

    def __init__(
        self, config: SASRecConfig | None = None, *, seed: int = 0, name: str = "sasrec", progress: bool = False
    ) -> None:
        self.config = config or SASRecConfig()
        self.seed = self.config.seed if self.config.seed is not None else seed
        self.name = name
        self.progress = progress
        self._model: Any = None
        self._seen: np.ndarray | None = None
        self.training: dict[str, Any] = {}

    def fit(self, catalog: Catalog, train: TrainData | None) -> SASRecScorer:
        train = require_logs(self.name, train, catalog)
        torch = _import_torch()
        start = time.perf_counter()
        holdout = last_event_holdout(train)
        with _reproducible(self.config.threads), torch.random.fork_rng():
            torch.manual_seed(self.seed)
            model, history = self._train(holdout, train.n_items)
        self._model = model
        self._seen = trained_items(train)
        best = max(history, key=lambda entry: entry["ndcg"]) if history else None
        seconds = time.perf_counter() - start
        self.training = {
            "epochs": len(history),
            "best_epoch": best["epoch"] if best else 0,
            "validation_metric": f"ndcg@{self.config.validation_k}",
            "validation": round(best["ndcg"], 6) if best else None,
            "seed": self.seed,
            "threads": self.config.threads,
            "seconds": round(seconds, 2),
        }
        logger.info(
            "%s: %d epochs, best %d (validation ndcg@%d %.4f), %.0fs",
            self.name,
            self.training["epochs"],
            self.training["best_epoch"],
            self.config.validation_k,
            self.training["validation"] or 0.0,
            seconds,
        )
        return self

    def _train(self, holdout: Holdout, n_items: int) -> tuple[Any, list[dict[str, Any]]]:
        from tqdm.auto import tqdm

        torch = _import_torch()
        config = self.config
        # Inputs are a sequence's items but the last, targets the items one step later (both the last max_length).
        usable = [s for s in holdout.train.sequences if s.size >= 2]
        if not usable:
            raise ConfigError(f"signal {self.name!r}: no training user has two events to learn a next item from")
        inputs = torch.from_numpy(left_padded([s[:-1] for s in usable], config.max_length))
        targets = torch.from_numpy(left_padded([s[1:] for s in usable], config.max_length)) - 1  # -1: no target
        model = build_model(n_items, config)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        order_rng = torch.Generator().manual_seed(self.seed)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
        seen = trained_items(holdout.train)
        history: list[dict[str, Any]] = []
        best_ndcg, best_state, waited = -1.0, copy.deepcopy(model.state_dict()), 0
        bar = tqdm(range(1, config.epochs + 1), desc=f"training {self.name}", unit="epoch", disable=not self.progress)
        for epoch in bar:
            model.train()
            total, batches = 0.0, 0
            for batch in torch.randperm(len(usable), generator=order_rng).split(config.batch_size):
                hidden = model(inputs[batch])
                wanted = targets[batch]
                keep = wanted >= 0
                loss = loss_fn(model.logits(hidden[keep]), wanted[keep])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach())
                batches += 1
            scores = floor_unseen(self._scores(model, holdout.queries, n_items), seen)
            ndcg = validation_ndcg(scores, holdout, config.validation_k)
            history.append({"epoch": epoch, "loss": total / max(batches, 1), "ndcg": ndcg})
            logger.info(
                "%s epoch %d: loss %.4f, validation ndcg@%d %.4f",
                self.name,
                epoch,
                history[-1]["loss"],
                config.validation_k,
                ndcg,
            )
            bar.set_postfix({"loss": f"{history[-1]['loss']:.3f}", "val_ndcg": f"{ndcg:.4f}"}, refresh=False)
            if ndcg > best_ndcg:
                best_ndcg, best_state, waited = ndcg, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= config.patience:
                    break
        bar.close()
        model.load_state_dict(best_state)
        model.eval()
        return model, history

    def _scores(self, model: Any, queries: Sequence[UserQuery], n_items: int) -> ScoreMatrix:
        """Raw next-item logits after each query's history (unseen items not yet floored)."""
        torch = _import_torch()
        model.eval()
        out = np.empty((len(queries), n_items), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(queries), SCORE_BATCH):
                chunk = queries[start : start + SCORE_BATCH]
                tokens = torch.from_numpy(left_padded([q.history for q in chunk], self.config.max_length))
                hidden = model(tokens)[:, -1]
                out[start : start + len(chunk)] = model.logits(hidden).double().numpy()
        return out

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._model is None or self._seen is None:
            raise not_fitted(self.name)
        with _reproducible(self.config.threads):
            raw = self._scores(self._model, queries, int(self._seen.size))
        return floor_unseen(raw, self._seen)
