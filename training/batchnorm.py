"""BatchNorm statistics recomputed from the training images ("precise BN", Wu & Johnson 2021).

A backbone trained from random weights on a small data set moves its weights faster than
BatchNorm's moving averages follow: inference-mode statistics then differ from the batches',
the error compounds over some fifty BatchNorm layers and every image gets the same answer.
Re-estimating the statistics with the current weights before each validation (and once after a
fold model's fit) makes validation, checkpoint choice and the exported model use true statistics.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

RECALIBRATION_BATCHES = 16


def _batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _batchnorm_layers(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def recalibrate(model: keras.Model, data: tf.data.Dataset, batches: int) -> None:
    """Moving statistics := the average of per-batch statistics over ``batches`` batches.

    NOTE: momentum k/(k+1) at the k-th batch (from 0) makes the moving value the running mean;
    a training-mode forward pass computes no gradients, so no weight changes.
    """
    layers = _batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    try:
        for k, (x, _) in enumerate(data.take(batches)):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Recalibrates ``model``'s BatchNorm statistics on ``data`` before every validation."""

    def __init__(self, model: keras.Model, data: tf.data.Dataset) -> None:
        super().__init__()
        self.target, self.data = model, data

    def on_test_begin(self, logs: dict | None = None) -> None:
        recalibrate(self.target, self.data, RECALIBRATION_BATCHES)
