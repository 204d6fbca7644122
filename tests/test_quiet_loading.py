"""Building the packaged encoder draws no transformers progress bar at the library's WARNING level, and leaves the
caller's progress-bar setting as it found it."""

from __future__ import annotations

import logging

import pytest


def test_encoder_load_draws_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as tf_logging

    from zsgen.embed.local import TransformersEncoder

    assert not logging.getLogger("zsgen").isEnabledFor(logging.INFO)
    tf_logging.enable_progress_bar()
    TransformersEncoder()
    err = capfd.readouterr().err
    assert "Loading weights" not in err
    assert tf_logging.is_progress_bar_enabled()  # restored: the setting is the caller's
