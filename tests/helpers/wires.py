"""One Open Inference Protocol request, sent over each wire, and its answer as a comparable verdict.

A ``Case`` says what to send protocol-neutrally; ``send(case, wire, server)`` lays it out as gRPC
(typed contents or raw_input_contents), REST JSON or REST with the binary-tensor extension, and
returns a ``Verdict``: the error class (the gRPC code; an HTTP error is mapped through the
``code`` its body names, as service/errors.py pairs them) or the outputs' numbers.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import numpy as np

from service import errors
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc

WIRES = ("grpc", "grpc_raw", "rest_json", "rest_binary")
_REASON_CODE = {
    cls.reason: cls.grpc_code.name
    for cls in (errors.VisorError, *errors.VisorError.__subclasses__())
}
_DTYPE = {"FP32": "<f4", "UINT8": "u1"}
_CONTENTS = {"FP32": "fp32_contents", "UINT8": "uint_contents", "BYTES": "bytes_contents"}


@dataclass
class Input:
    name: Any = "image"
    datatype: Any = "FP32"
    shape: Any = (1, 8, 8, 1)
    data: Any = None  # flat list of numbers, or of bytes for BYTES


@dataclass
class Case:
    id: str
    inputs: list[Input]
    params: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] | None = None
    model: str = "tiny"
    version: str = ""
    expect: str = "OK"  # a gRPC code name
    wires: tuple[str, ...] = WIRES
    grpc_params: dict[str, Any] | None = None  # how gRPC spells params it cannot carry (lists)


@dataclass(frozen=True)
class Verdict:
    code: str
    outputs: tuple = ()
    message: str = ""

    def same(self, other: Verdict) -> bool:
        if self.code != other.code:
            return False
        if self.code != "OK":
            return True
        return len(self.outputs) == len(other.outputs) and all(
            _close(a, b) for a, b in zip(self.outputs, other.outputs, strict=True)
        )


def _close(a: tuple, b: tuple) -> bool:
    (na, ta, sa, va), (nb, tb, sb, vb) = a, b
    if (na, ta, sa) != (nb, tb, sb) or len(va) != len(vb):
        return False
    if ta == "FP32":
        return bool(np.allclose(va, vb, atol=1e-6))
    return va == vb


# --- gRPC -----------------------------------------------------------------------------------
def _param(value: Any) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    return pb.InferParameter(string_param=str(value))


def grpc_request(case: Case, raw: bool) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=case.model, model_version=case.version)
    params = case.grpc_params if case.grpc_params is not None else case.params
    for k, v in params.items():
        req.parameters[k].CopyFrom(_param(v))
    for spec in case.inputs:
        t = req.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        if spec.data is None:
            continue
        if raw:
            req.raw_input_contents.append(_raw(spec))
        else:
            getattr(t.contents, _CONTENTS.get(spec.datatype, "fp32_contents")).extend(spec.data)
    for out in case.outputs or []:
        o = req.outputs.add(name=out["name"])
        for k, v in (out.get("parameters") or {}).items():
            o.parameters[k].CopyFrom(_param(v))
    return req


def _raw(spec: Input) -> bytes:
    if spec.datatype == "BYTES" or (spec.data and isinstance(spec.data[0], bytes)):
        return b"".join(struct.pack("<I", len(b)) + b for b in spec.data)
    return np.asarray(spec.data, dtype=_DTYPE.get(spec.datatype, "<f4")).tobytes()


def send_grpc(stub: pb_grpc.GRPCInferenceServiceStub, req: pb.ModelInferRequest) -> Verdict:
    try:
        resp = stub.ModelInfer(req, timeout=60)
    except grpc.RpcError as err:
        return Verdict(err.code().name, message=err.details() or "")
    outs = []
    for i, o in enumerate(resp.outputs):
        if resp.raw_output_contents:
            raw = resp.raw_output_contents[i]
            values = np.frombuffer(raw, "<f4").tolist() if o.datatype == "FP32" else _unraw(raw)
        elif o.datatype == "FP32":
            values = list(o.contents.fp32_contents)
        else:
            values = [b.decode() for b in o.contents.bytes_contents]
        outs.append((o.name, o.datatype, tuple(o.shape), values))
    return Verdict("OK", tuple(outs))


def _unraw(raw: bytes) -> list[str]:
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + n].decode())
        pos += 4 + n
    return out


# --- REST -----------------------------------------------------------------------------------
def rest_body(case: Case, binary: bool) -> tuple[bytes, dict[str, str]]:
    inputs, tail = [], []
    for spec in case.inputs:
        entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}
        if spec.data is not None:
            if binary:
                raw = _raw(spec)
                tail.append(raw)
                entry["parameters"] = {"binary_data_size": len(raw)}
            elif spec.datatype == "BYTES":
                entry["data"] = [
                    base64.b64encode(d).decode() if isinstance(d, bytes) else d for d in spec.data
                ]
            else:
                entry["data"] = list(spec.data)
        inputs.append(entry)
    header: dict[str, Any] = {"inputs": inputs}
    if case.params:
        header["parameters"] = dict(case.params)
    if case.outputs is not None:
        header["outputs"] = case.outputs
    head = json.dumps(header).encode()
    if not binary:
        return head, {"Content-Type": "application/json"}
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + b"".join(tail), headers


def rest_url(base: str, model: str, version: str) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return f"{base}{path}/infer"


def send_rest(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> Verdict:
    resp = client.post(url, content=body, headers=headers)
    if resp.status_code != 200:
        try:
            info = resp.json()
        except ValueError:
            return Verdict(f"HTTP {resp.status_code}", message=resp.text[:200])
        code = _REASON_CODE.get(info.get("code"), f"HTTP {resp.status_code}")
        return Verdict(code, message=str(info.get("error")))
    size = resp.headers.get("inference-header-content-length")
    head = json.loads(resp.content[: int(size)] if size else resp.content)
    tail, pos, outs = resp.content[int(size) :] if size else b"", 0, []
    for o in head["outputs"]:
        n = (o.get("parameters") or {}).get("binary_data_size")
        if n is not None:
            raw, pos = tail[pos : pos + n], pos + n
            values = np.frombuffer(raw, "<f4").tolist() if o["datatype"] == "FP32" else _unraw(raw)
        else:
            values = o["data"]
        outs.append((o["name"], o["datatype"], tuple(o["shape"]), values))
    return Verdict("OK", tuple(outs))


def send(case: Case, wire: str, http_base: str, stub: Any, client: httpx.Client) -> Verdict:
    if wire.startswith("grpc"):
        return send_grpc(stub, grpc_request(case, raw=wire == "grpc_raw"))
    body, headers = rest_body(case, binary=wire == "rest_binary")
    if wire == "rest_binary" and case.params.get("binary_data_output") is None:
        # NOTE: ask for binary outputs too, so the answer's binary layout is compared as well.
        head_len = int(headers["Inference-Header-Content-Length"])
        header = json.loads(body[:head_len])
        header.setdefault("parameters", {})["binary_data_output"] = True
        head = json.dumps(header).encode()
        body, headers["Inference-Header-Content-Length"] = head + body[head_len:], str(len(head))
    return send_rest(client, rest_url(http_base, case.model, case.version), body, headers)


def finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)
