"""Data augmentation with Keras preprocessing layers (random only while fitting)."""

from __future__ import annotations

import tf_keras as keras

from training.config import AugmentConfig


def build_augmentation(cfg: AugmentConfig, seed: int) -> keras.Sequential | None:
    """A Sequential of random layers, or None when every augmentation is disabled.

    NOTE: it wraps the inference model only in the *training* model, so exported artifacts contain
    no augmentation ops at all (the layers would be identity at inference anyway).
    """
    layers: list[keras.layers.Layer] = []
    if cfg.flip != "none":
        layers.append(keras.layers.RandomFlip(cfg.flip, seed=seed))
    if cfg.rotation > 0:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="nearest", seed=seed))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="nearest", seed=seed))
    if cfg.translation > 0:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.translation, cfg.translation, fill_mode="nearest", seed=seed
            )
        )
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, seed=seed))
    return keras.Sequential(layers, name="augmentation") if layers else None
