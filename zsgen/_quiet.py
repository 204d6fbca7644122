"""Model loading without transformers' "Loading weights" progress bar, unless the caller asked for INFO logs.

The library logs at WARNING, yet every ``Recommender(...)`` drew transformers' weight-loading bar on stderr: the bar
is not a log record, so no logging level hid it. The bar is switched off around the load only and switched back on
afterwards, so a program that uses transformers itself keeps its own setting; with zsgen's logger at INFO or below
(``zsgen -v``) the bar stays, as the CLI documents.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("zsgen")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Suppress transformers' progress bars for the duration of a model load (not thread-safe against another
    thread toggling the same global setting; loads are rare and short)."""
    if logger.isEnabledFor(logging.INFO):
        yield
        return
    from transformers.utils import logging as tf_logging

    tf: Any = tf_logging  # untyped in transformers
    was_enabled = bool(tf.is_progress_bar_enabled())
    if was_enabled:
        tf.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tf.enable_progress_bar()
