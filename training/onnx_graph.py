"""Read an ONNX image classifier from any framework and wrap it so it takes raw pixels.

Visor models take ``float32 [N, H, W, C]`` pixels in 0..255 and answer probabilities. A model
exported from PyTorch usually takes ``[N, C, H, W]`` in 0..1, normalised per channel (torchvision:
mean 0.485,0.456,0.406, std 0.229,0.224,0.225), and answers logits. :func:`wrap` puts the
preprocessing (one multiply-add per channel, then a transpose) in front of the user's graph and a
softmax behind it, so the served model needs nothing but decoded pixels. :func:`reference` does
the same preprocessing in NumPy, the plain way, for the parity check against the original graph.
No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from training.config import InputShape
from training.errors import ImportModelError

Layout = Literal["nchw", "nhwc"]
PREFIX = "source/"
# Ops that pass a classifier's scores through unchanged, between its last real op and the output.
PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Cast", "Unsqueeze"})
PROBABILITY_OPS = frozenset({"Softmax", "Sigmoid"})
MIN_OPSET = 7  # Broadcasting Mul/Add (numpy-style) start here


@dataclass(frozen=True)
class Preprocessing:
    """What the user's graph expects: layout, pixel range and per-channel mean/std."""

    layout: Layout
    pixel_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def scale_offset(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``x * scale + offset`` per channel: 0..255 → range → (x - mean) / std."""
        low, high = self.pixel_range
        mean, std = self.channel_values(channels)
        scale = (high - low) / 255.0 / std
        offset = (low - mean) / std
        return scale.astype(np.float32), offset.astype(np.float32)

    def channel_values(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        values = []
        for name, given in (("--mean", self.mean), ("--std", self.std)):
            if len(given) not in (1, channels):
                raise ImportModelError(
                    f"{name} gives {len(given)} values; the model takes {channels} channel(s): "
                    f"give 1 or {channels}"
                )
            values.append(np.broadcast_to(np.asarray(given, np.float64), (channels,)))
        if np.any(values[1] == 0):
            raise ImportModelError("--std values must not be 0")
        return values[0], values[1]


@dataclass(frozen=True)
class OnnxSource:
    """A user's ONNX classifier and what was read from it."""

    model: onnx.ModelProto
    input_name: str
    output_name: str
    shape: InputShape
    layout: Layout
    classes: int | None
    outputs_probabilities: bool
    opset: int


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    tensor = value.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _layout(dims: list[int | None], given: Layout | None) -> Layout:
    if given is not None:
        return given
    first, last = dims[1] in (1, 3), dims[3] in (1, 3)
    if first != last:
        return "nchw" if first else "nhwc"
    raise ImportModelError(
        f"cannot tell the input layout of shape {dims}: give --input-layout nchw|nhwc"
    )


def _producer_op(graph: onnx.GraphProto, name: str) -> str:
    """The op that computes ``name``, looking through ops that pass scores through unchanged."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in PASS_THROUGH and node.input:
        node = producers.get(node.input[0])
    return node.op_type if node is not None else ""


def _shape(dims: list[int | None], layout: Layout, color_mode: str | None, size) -> InputShape:
    if layout == "nchw":
        channels, height, width = dims[1], dims[2], dims[3]
    else:
        height, width, channels = dims[1], dims[2], dims[3]
    if channels is None:
        if color_mode is None:
            raise ImportModelError("the model accepts any channel count: give --color-mode")
        channels = 1 if color_mode == "grayscale" else 3
    if channels not in (1, 3):
        raise ImportModelError(f"the model takes {channels} channels; Visor serves 1 or 3")
    if color_mode is not None and (color_mode == "grayscale") != (channels == 1):
        raise ImportModelError(
            f"the model takes {channels} channel(s); --color-mode {color_mode} does not fit"
        )
    if size is not None:
        if (height or size[0], width or size[1]) != tuple(size):
            raise ImportModelError(
                f"the model takes {height}x{width} images; --image-size {size[0]}x{size[1]} "
                "does not fit"
            )
        height, width = size
    if height is None or width is None:
        raise ImportModelError("the model accepts any image size: give --image-size HxW")
    return InputShape(height, width, channels)


def read_onnx(
    path: Path, layout: Layout | None, color_mode: str | None, size: tuple[int, int] | None
) -> OnnxSource:
    """Load and check ``path``: one float32 image input of rank 4, one output."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - any parse or check failure, in one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ImportModelError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {first})")
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ImportModelError(
            f"{path} has {len(inputs)} input(s) and {len(graph.output)} output(s); an image "
            "classifier has one of each"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ImportModelError(
            f"{path} uses opset {opset}; convert it to {MIN_OPSET} or later first "
            "(onnx.version_converter.convert_version)"
        )
    image = inputs[0]
    if image.type.tensor_type.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(image.type.tensor_type.elem_type)
        raise ImportModelError(f"the model's input {image.name!r} is {kind}; Visor feeds float32")
    dims = _dims(image)
    if len(dims) != 4:
        raise ImportModelError(f"the model's input {dims} is not an image batch of rank 4")
    layout = _layout(dims, layout)
    scores = _dims(graph.output[0])[1:]  # [N, K], or [N, K, 1, 1] from a conv head
    return OnnxSource(
        model=model,
        input_name=image.name,
        output_name=graph.output[0].name,
        shape=_shape(dims, layout, color_mode, size),
        layout=layout,
        classes=int(np.prod(scores)) if scores and None not in scores else None,
        outputs_probabilities=_producer_op(graph, graph.output[0].name) in PROBABILITY_OPS,
        opset=opset,
    )


def wrap(
    source: OnnxSource, prep: Preprocessing, logits: bool, input_name: str, output_name: str
) -> onnx.ModelProto:
    """``input_name`` raw pixels [N, H, W, C] 0..255 → ``output_name`` probabilities [N, K]."""
    model = onnx.compose.add_prefix(source.model, PREFIX)
    graph = model.graph
    shape = source.shape
    scale, offset = prep.scale_offset(shape.channels)
    first = PREFIX + source.input_name
    normalised = "visor/normalised" if prep.layout == "nchw" else first
    pre = [
        helper.make_node("Mul", [input_name, "visor/scale"], ["visor/scaled"], name="visor/scale"),
        helper.make_node(
            "Add", ["visor/scaled", "visor/offset"], [normalised], name="visor/offset"
        ),
    ]
    if prep.layout == "nchw":
        pre.append(
            helper.make_node(
                "Transpose", [normalised], [first], perm=[0, 3, 1, 2], name="visor/nchw"
            )
        )
    scores = PREFIX + source.output_name
    post = [helper.make_node("Flatten", [scores], ["visor/scores"], axis=1, name="visor/flatten")]
    post.append(
        helper.make_node("Softmax", ["visor/scores"], [output_name], axis=1, name="visor/softmax")
        if logits
        else helper.make_node("Identity", ["visor/scores"], [output_name], name="visor/output")
    )
    nodes = [*pre, *graph.node, *post]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(
        [
            numpy_helper.from_array(scale, "visor/scale"),
            numpy_helper.from_array(offset, "visor/offset"),
        ]
    )
    kept = [i for i in graph.input if i.name != first]
    del graph.input[:]
    pixels = (None, shape.height, shape.width, shape.channels)
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *pixels[1:]])
    graph.input.extend([image, *kept])
    del graph.output[:]
    graph.output.extend(
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", source.classes])]
    )
    onnx.checker.check_model(model)
    return model


def reference(
    source: OnnxSource, prep: Preprocessing, pixels: np.ndarray, logits: bool
) -> np.ndarray:
    """The user's graph on NumPy-preprocessed pixels, softmaxed when it answers logits."""
    low, high = prep.pixel_range
    mean, std = prep.channel_values(source.shape.channels)
    x = pixels.astype(np.float64) / 255.0 * (high - low) + low
    x = ((x - mean) / std).astype(np.float32)
    if prep.layout == "nchw":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    (out,) = session(source.model).run([source.output_name], {source.input_name: x})
    out = out.reshape(len(out), -1).astype(np.float64)
    if not logits:
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def session(model: onnx.ModelProto):
    """An ONNX Runtime CPU session over an in-memory model."""
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
