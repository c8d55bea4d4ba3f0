"""The gRPC floor: what one grpc.aio event loop costs per call before Visor does anything.

    python -m loadtests.floor_server --port 50099 --classes 10
    python -m loadtests.client --target grpc --port 50099 --model digits \\
        --payloads loadtests/results/<run>/payloads --concurrency 64 --duration 6

A ``GRPCInferenceService`` with Visor's generated stubs whose ``ModelInfer`` runs no model: it
answers every call with a fixed response of the shape Visor gives (``probabilities`` FP32
``[1, classes]`` and ``labels`` BYTES ``[1]``, raw), and ``ModelReady``/``ServerReady`` say yes.
``--via-pool`` makes each call await a future that a thread pool resolves, the way requests
wait for the batcher. Compare its requests/s and event-loop CPU per request with Visor's under
the same client (docs/benchmarks.md, finding 16): the difference is Visor's own path. Binds
loopback only; a measuring stick, not a server.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc

LOOPBACK = "127.0.0.1"


class FloorServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, classes: int, pool: ThreadPoolExecutor | None) -> None:
        answer = pb.ModelInferResponse(model_version="1")
        answer.outputs.add(name="probabilities", datatype="FP32", shape=[1, classes])
        answer.outputs.add(name="labels", datatype="BYTES", shape=[1])
        answer.raw_output_contents.append(np.full(classes, 1 / classes, "<f4").tobytes())
        answer.raw_output_contents.append(struct.pack("<I", 1) + b"0")
        self._answer = answer
        self._pool = pool

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request, context):
        if self._pool is not None:
            await asyncio.wrap_future(self._pool.submit(len, request.raw_input_contents))
        resp = pb.ModelInferResponse()
        resp.CopyFrom(self._answer)
        resp.model_name, resp.id = request.model_name, request.id
        return resp


async def serve(port: int, classes: int, via_pool: bool) -> None:
    pool = ThreadPoolExecutor(2) if via_pool else None
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(classes, pool), server)
    if server.add_insecure_port(f"{LOOPBACK}:{port}") == 0:
        raise SystemExit(f"floor_server: cannot bind {LOOPBACK}:{port}")
    await server.start()
    print(f"floor_server: listening on {LOOPBACK}:{port}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--classes", type=int, default=10, help="width of the fixed probabilities")
    p.add_argument(
        "--via-pool",
        action="store_true",
        help="await a thread pool's future in every call, like a request waiting for a batch",
    )
    args = p.parse_args(argv)
    if args.classes < 1:
        p.error("--classes must be at least 1")
    asyncio.run(serve(args.port, args.classes, args.via_pool))


if __name__ == "__main__":
    main()
