"""KServe's Python server (``kserve.ModelServer``) serving the ONNX file: a peer for ``make bench``.

    build/peers/kserve/bin/python -m loadtests.peer_servers.kserve_server \\
        --version-dir models/digits/1 --name digits --http-port 8080 --grpc-port 8081

A custom ``kserve.Model`` whose ``predict`` calls the session inline (KServe runs a synchronous
``predict`` on its event loop), answering Open Inference Protocol gRPC and REST v2 (binary
tensors included) with the FP32 probabilities. Runs in its own virtual environment
(``scripts/peer-venvs.sh``); binds loopback only.
"""

from __future__ import annotations

import sys

from loadtests.peer_servers.onnx_model import OnnxModel, parse_args


def main() -> None:
    args = parse_args(__doc__)
    # NOTE: kserve builds its argument parser at import time and reads sys.argv there.
    sys.argv = [sys.argv[0], "--enable_latency_logging", "false"]
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class Peer(kserve.Model):
        def __init__(self) -> None:
            super().__init__(args.name)
            self.model = OnnxModel(args.version_dir)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None, response_headers=None):
            probs = self.model(payload.inputs[0].as_numpy())
            out = InferOutput(self.model.output_name, list(probs.shape), "FP32")
            out.set_data_from_numpy(probs, binary_data=True)
            return InferResponse(
                payload.id or "", self.name, [out], use_binary_outputs=payload.use_binary_outputs
            )

    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port)
    # NOTE: uvicorn listens on every address by default; the benchmark only uses loopback.
    server.start([Peer()])


if __name__ == "__main__":
    main()
