"""Open Inference Protocol REST tensors ↔ numpy, JSON and the binary-tensor extension.

Binary extension (what tritonclient.http sends by default): the body is the JSON header of
``Inference-Header-Content-Length`` bytes followed by each binary input's raw bytes, in order;
an input says how many with ``parameters.binary_data_size``. BYTES elements are each a 4-byte
little-endian length and the bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

import numpy as np

from service.errors import InvalidInput, PayloadTooLarge
from service.protocol import TensorData
from service.protocol.params import check_known
from service.protocol.parse import flatten
from service.protocol.response import OutputTensor


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's request compression), bounded."""
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if wbits is None:
        raise InvalidInput(f"Content-Encoding '{encoding}' is not supported: use gzip or deflate.")
    inflater = zlib.decompressobj(wbits)
    try:
        # Bounded, so a small compressed body cannot expand past the body limit.
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise InvalidInput(f"The {encoding} body could not be decompressed: {err}.") from err
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"The decompressed body is over this server's limit of {limit} bytes "
            "(VISOR_MAX_BODY_BYTES)."
        )
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary tail (empty without the binary extension)."""
    view = memoryview(body)
    size = len(body)
    if header_length is not None:
        if not _ascii_digits(header_length) or int(header_length) > len(body):
            raise InvalidInput("Inference-Header-Content-Length is not a length inside the body.")
        size = int(header_length)
    header = load_json(view[:size].tobytes() if size != len(body) else body, "inference request")
    if not isinstance(header, dict):
        raise InvalidInput("The inference request must be a JSON object with an 'inputs' list.")
    return header, view[size:]


def load_json(body: bytes | str, what: str) -> Any:
    """Parse JSON; a body nested too deeply for the parser is a client error, not a crash."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        reason = "it nests too deeply" if isinstance(err, RecursionError) else str(err)
        raise InvalidInput(f"The {what} is not valid JSON: {reason}.") from None


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


INPUT_FIELDS = ("name", "datatype", "shape", "data", "parameters")


def input_tensor(spec: Any, tail: memoryview, offset: int) -> tuple[TensorData, int]:
    """One JSON input → ``TensorData`` (binary data sliced from the tail); the new tail offset."""
    if not isinstance(spec, dict):
        raise InvalidInput("Each entry of 'inputs' must be an object with name, datatype, shape.")
    check_known(spec, INPUT_FIELDS, "input field")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"The parameters of input {spec.get('name')!r:.60} must be an object.")
    parameters = dict(parameters)
    size = parameters.pop("binary_data_size", None)
    raw = None
    if size is not None:
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 0 <= size <= len(tail) - offset
        ):
            raise InvalidInput(
                f"Input {spec.get('name')!r:.60} declares more binary data than the body holds."
            )
        raw, offset = tail[offset : offset + size], offset + size
    data = spec.get("data")
    if spec.get("datatype") == "BYTES" and data is not None:
        data = [_b64(item, spec.get("name")) for item in flatten(data)]
    tensor = TensorData(
        name=spec.get("name"),
        datatype=spec.get("datatype"),
        shape=spec.get("shape"),
        values=data,
        raw=raw,
        sources=(data is not None) + (raw is not None),
        parameters=parameters,
    )
    return tensor, offset


def _b64(item: Any, name: Any) -> Any:
    # JSON cannot carry raw image bytes; BYTES elements in JSON are base64 (as MLServer).
    if not isinstance(item, str):
        return item  # the parser refuses it with the same message on every wire
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInput(f"Input {name!r:.60}: an element is not valid base64.") from err


def encode_output(out: OutputTensor, chunks: list[bytes]) -> dict[str, Any]:
    """One output tensor as JSON; when it is sent raw its bytes are appended to ``chunks``."""
    entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
    if out.raw is not None:
        chunks.append(out.raw)
        entry["parameters"] = {"binary_data_size": len(out.raw)}
    elif isinstance(out.value, np.ndarray):
        entry["data"] = out.value.ravel().tolist()
    else:
        entry["data"] = [v.decode("utf-8", "replace") for v in out.value]
    return entry
