"""Keras callbacks of `tfcxr.train`: epoch timing, validation AUROC, the NaN guard, TensorBoard.

Order matters in the callback list: `EpochTimer` first, `MacroAUROC` before `ModelCheckpoint` and `CSVLogger`
(they read the `val_macro_auroc` it adds to the epoch logs).
"""

import importlib.util
import logging
import time

import keras
import numpy as np

from tfcxr.evaluation.metrics import macro_auroc
from tfcxr.labels import TARGETS
from tfcxr.rundir import MONITOR

logger = logging.getLogger("tfcxr.train")


class NaNLossError(RuntimeError):
    """Training loss became NaN or Inf."""


class EpochTimer(keras.callbacks.Callback):
    """Wall time of the training part of each epoch (first in the callback list)."""

    def __init__(self):
        super().__init__()
        self.train_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds.append(time.perf_counter() - self._start)


class MacroAUROC(keras.callbacks.Callback):
    """Validation loss and sklearn AUROC per class + macro, added to the epoch logs.

    Must come before ModelCheckpoint and CSVLogger in the callback list.
    """

    def __init__(self, dataset, labels):
        super().__init__()
        self.dataset = dataset
        self.labels = labels
        self.seconds = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        logs = logs if logs is not None else {}
        probs = self.model.predict(self.dataset, verbose=0)
        loss = self.model.loss(self.labels, probs)
        logs["val_loss"] = float(np.asarray(loss))
        macro, per_class, reasons = macro_auroc(self.labels, probs, TARGETS)
        logs[MONITOR] = macro
        for name, value in zip(TARGETS, per_class):
            logs[f"val_auroc_{name}"] = value
        for name, reason in reasons.items():
            logger.warning("epoch %d: validation AUROC of %s is undefined (%s)", epoch + 1, name, reason)
        logger.info(
            "epoch %d: val_loss %.4f, val macro AUROC %.4f (%s)",
            epoch + 1,
            logs["val_loss"],
            macro,
            ", ".join(f"{n} {v:.3f}" for n, v in zip(TARGETS, per_class)),
        )
        self.seconds.append(time.perf_counter() - start)


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """Raise `NaNLossError` at the first NaN/Inf batch loss.

    Raising (not `stop_training`) skips every epoch-end callback, so the NaN
    weights reach neither best.keras nor checkpoints/.
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            raise NaNLossError(f"loss became {loss} at epoch {self.epoch + 1}, batch {batch + 1}")


def tensorboard_callbacks(log_dir):
    """A TensorBoard callback, or none (with a warning) when tensorboard is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        logger.warning("tensorboard is not installed (pip install tensorboard); %s is not written", log_dir)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]
