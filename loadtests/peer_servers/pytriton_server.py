"""Triton Inference Server through PyTriton serving the ONNX file: a peer for ``make bench``.

    LD_LIBRARY_PATH=<libpython dir> build/peers/pytriton/bin/python \\
        -m loadtests.peer_servers.pytriton_server --version-dir models/digits/1 --name digits \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002

Triton's C++ front-ends (OIP gRPC and REST v2) and its dynamic batcher in front of a Python
inference callable (``@batch``) that runs the session on the batch Triton formed. Triton's
Python-backend stub links the interpreter's libpython, so ``loadtests.peers.start_peer`` puts the
base Python's LIBDIR on LD_LIBRARY_PATH. Runs in its own virtual environment
(``scripts/peer-venvs.sh``); binds loopback only.
"""

from __future__ import annotations

import numpy as np

from loadtests.peer_servers.onnx_model import OnnxModel, parse_args


def main() -> None:
    args = parse_args(__doc__, "metrics")
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    model = OnnxModel(args.version_dir)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {model.output_name: model(inputs[model.input_name])}

    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.http_port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port,
        metrics_address="127.0.0.1", metrics_port=args.metrics_port,
    )  # fmt: skip
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[Tensor(name=model.input_name, dtype=np.uint8, shape=model.shape)],
            outputs=[Tensor(name=model.output_name, dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher()),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
