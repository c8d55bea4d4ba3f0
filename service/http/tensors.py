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

from service.codecs import PIXEL_DTYPES, bytes_from_raw, bytes_to_raw, tensor_from_bytes
from service.errors import InvalidInput, PayloadTooLarge


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's request compression), bounded."""
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if wbits is None:
        raise InvalidInput(f"Content-Encoding '{encoding}' is not supported: use gzip or deflate.")
    inflater = zlib.decompressobj(wbits)
    try:
        # NOTE: bounded, so a small compressed body cannot expand past the body limit.
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
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput("Inference-Header-Content-Length is not a length inside the body.")
        size = int(header_length)
    try:
        header = json.loads(view[:size].tobytes() if size != len(body) else body)
    except ValueError as err:
        raise InvalidInput(f"The inference request is not valid JSON: {err}.") from err
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("The inference request needs an 'inputs' list.")
    return header, view[size:]


def decode_input(spec: dict[str, Any], tail: memoryview, offset: int) -> tuple[Any, int]:
    """One input → ``list[bytes]`` (BYTES) or an ndarray; returns it and the new tail offset."""
    name, datatype = spec.get("name", "?"), spec.get("datatype")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"Input '{name}' needs a 'shape' of non-negative integers.")
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or offset + size > len(tail):
            raise InvalidInput(f"Input '{name}' declares more binary data than the body holds.")
        raw, offset = tail[offset : offset + size], offset + size
        if datatype == "BYTES":
            return bytes_from_raw(raw.tobytes()), offset
        # NOTE: a view on the request body, no copy; the engine only reads it.
        return tensor_from_bytes(raw, str(datatype), shape), offset
    data = spec.get("data")
    if data is None:
        raise InvalidInput(f"Input '{name}' has neither 'data' nor binary data.")
    if datatype == "BYTES":
        return [_b64(item, name) for item in _flatten(data)], offset
    dtype = PIXEL_DTYPES.get(str(datatype))
    if dtype is None:
        raise InvalidInput(
            f"Input '{name}': datatype {datatype} is not accepted: use UINT8, FP32 or BYTES."
        )
    try:
        return np.asarray(data, dtype=dtype).reshape(shape), offset
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"Input '{name}': the data does not fit shape {shape} ({err}).") from err


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _b64(item: Any, name: str) -> bytes:
    # NOTE: JSON cannot carry raw image bytes; BYTES elements in JSON are base64 (as MLServer).
    if not isinstance(item, str):
        raise InvalidInput(f"Input '{name}': BYTES elements in JSON must be base64 strings.")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInput(f"Input '{name}': an element is not valid base64.") from err


def encode_output(
    name: str, value: np.ndarray | list[bytes], shape: list[int], binary: bool, chunks: list[bytes]
) -> dict[str, Any]:
    """One output tensor; binary data is appended to ``chunks`` instead of the JSON."""
    if isinstance(value, np.ndarray):
        datatype = "FP32"
        if binary:
            raw = np.ascontiguousarray(value, dtype=np.float32).tobytes()
            chunks.append(raw)
            return {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(raw)},
            }
        return {"name": name, "datatype": datatype, "shape": shape, "data": value.ravel().tolist()}
    if binary:
        raw = bytes_to_raw(value)
        chunks.append(raw)
        return {
            "name": name,
            "datatype": "BYTES",
            "shape": shape,
            "parameters": {"binary_data_size": len(raw)},
        }
    return {
        "name": name,
        "datatype": "BYTES",
        "shape": shape,
        "data": [v.decode("utf-8", "replace") for v in value],
    }
