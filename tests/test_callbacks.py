"""Tests for tfcxr.callbacks: the NaN guard and the epoch timer."""

import numpy as np
import pytest

from tfcxr import callbacks


def test_nan_guard_raises_at_the_first_non_finite_loss():
    guard = callbacks.NaNGuard()
    guard.on_epoch_begin(2)
    guard.on_batch_end(0, {"loss": 0.5})
    with pytest.raises(callbacks.NaNLossError, match="loss became nan at epoch 3, batch 2"):
        guard.on_batch_end(1, {"loss": float("nan")})


def test_epoch_timer_records_one_duration_per_epoch():
    timer = callbacks.EpochTimer()
    for epoch in range(2):
        timer.on_epoch_begin(epoch)
        timer.on_epoch_end(epoch)
    assert len(timer.train_seconds) == 2 and all(np.isfinite(timer.train_seconds))
