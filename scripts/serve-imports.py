"""Import every module of service/ that serving runs; exit 1 naming what is missing.

The image build runs it after scripts/slim-venv.sh: whatever that removed, serving must not need.
Modules of the optional paths (TensorFlow backends, offline scoring) may lack their own packages.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys

# the packages of the train and score profiles, absent from the serving image by design
OPTIONAL = {"tensorflow", "tf_keras", "pandas", "pyarrow", "pyspark", "tqdm"}


# the serving packages; `contract` (what training and serving share) where the tree has it
PACKAGES = ("service", "contract")


def main() -> int:
    failed = []
    # imported lazily by serving code: /evaluate's metrics, drift, gRPC reflection, and
    # --models s3://, where fsspec loads s3fs (and with it aiobotocore/botocore) by the URL
    names = [
        "sklearn.metrics",
        "scipy.special",
        "google.protobuf.descriptor_pb2",
        "grpc_reflection.v1alpha.reflection_pb2",
        "fsspec",
        "s3fs",
    ]
    for package in PACKAGES:
        if importlib.util.find_spec(package) is None:
            continue
        path = importlib.import_module(package).__path__
        names += [package] + [m.name for m in pkgutil.walk_packages(path, f"{package}.")]
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in OPTIONAL:
                failed.append(f"{name}: {exc}")
    print("\n".join(failed) or f"serve-imports: {len(names)} modules import")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
