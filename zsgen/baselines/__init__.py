"""Trained yardsticks for the evaluation: EASE and SASRec, fitted on a run's training split only.

They are not part of the zero-shot recommender. ``zsgen evaluate`` trains them beside zsgen's rankers (ranker kinds
``ease`` and ``sasrec``) so that every report can say how far a model *trained on the same log* gets on the same
candidates. Both are :class:`zsgen.score.base.Scorer` s: they learn only from the :class:`~zsgen.score.base.TrainData`
they are given (the evaluation protocol has already removed every target from it) and choose their own
hyper-parameters (EASE's L2 weight, SASRec's number of epochs) on each training user's last training event.

SASRec needs torch (the ``local`` extra); it is imported only when a SASRec model is built, so importing this package
(or zsgen) never imports torch.
"""

from zsgen.baselines.config import EASEConfig, SASRecConfig
from zsgen.baselines.ease import EASEScorer
from zsgen.baselines.holdout import Holdout, last_event_holdout, validation_ndcg
from zsgen.baselines.sasrec import SASRecScorer
from zsgen.baselines.unseen import floor_unseen, trained_items

__all__ = [
    "EASEConfig",
    "EASEScorer",
    "Holdout",
    "SASRecConfig",
    "SASRecScorer",
    "floor_unseen",
    "last_event_holdout",
    "trained_items",
    "validation_ndcg",
]
