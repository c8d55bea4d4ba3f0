"""tf.data input pipelines: Pillow decode (same code as serving) -> cache -> shuffle -> batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.imaging import decode_image
from contract.metadata import ColorMode
from training.data import Split


def _decoder(color_mode: ColorMode, size: int, method: str):
    def decode(path: bytes) -> np.ndarray:
        return decode_image(Path(path.decode()), color_mode, (size, size), method).astype(
            np.float32
        )

    return decode


def make_dataset(
    split: Split,
    color_mode: ColorMode,
    image_size: int,
    resize_method: str,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batched ``(pixels float32 [B,H,W,C] 0..255, label int64 [B])``; shuffled when seeded.

    NOTE: images are decoded with Pillow through ``numpy_function`` so training sees exactly what
    the server's Pillow decoding produces; the decoded tensors are cached after the first epoch.
    """
    channels = 1 if color_mode == "grayscale" else 3
    decode = _decoder(color_mode, image_size, resize_method)
    paths = tf.constant([str(p) for p in split.paths])
    ds = tf.data.Dataset.from_tensor_slices((paths, split.labels))
    ds = ds.map(
        lambda p, y: (tf.numpy_function(decode, [p], tf.float32, stateful=False), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.map(lambda x, y: (tf.ensure_shape(x, (image_size, image_size, channels)), y))
    ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split.paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # The source is an in-memory list of paths, not files: shard by element across workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def load_arrays(split: Split, color_mode: ColorMode, image_size: int, method: str) -> np.ndarray:
    """All images of a split as one float32 array (for evaluation, calibration, parity)."""
    ds = make_dataset(split, color_mode, image_size, method, batch_size=256)
    return np.concatenate([x.numpy() for x, _ in ds], axis=0)
