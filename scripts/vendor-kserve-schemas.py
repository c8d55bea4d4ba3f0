"""Write the trimmed KServe CRD schemas that tests/deploy/test_kserve.py validates against.

    git clone --depth 1 --branch v0.20.0 https://github.com/kserve/kserve /tmp/kserve
    python scripts/vendor-kserve-schemas.py /tmp/kserve v0.20.0

Reads config/crd/full/serving.kserve.io_{servingruntimes,inferenceservices}.yaml from that checkout
and writes each CRD's openAPIV3Schema under tests/deploy/kserve/, less the parts Visor never uses
(see TRIMMED): the files stay small enough to review, and a manifest that uses a trimmed field is
refused by the test, so nothing passes unchecked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "tests" / "deploy" / "kserve"
CRDS = {
    "servingruntimes": "servingruntime.schema.json",
    "inferenceservices": "inferenceservice.schema.json",
}
# NOTE: ModelMesh, multi-node and the per-framework predictor shortcuts: Visor's manifests use
# spec.containers (runtime) and spec.predictor.model (InferenceService) only.
FRAMEWORKS = ["huggingface", "lightgbm", "onnx", "paddle", "pmml", "pytorch", "sklearn"]
FRAMEWORKS += ["tensorflow", "triton", "xgboost"]
TRIMMED = {
    "servingruntimes": [("spec", "workerSpec"), ("spec", "builtInAdapter"), ("status",)],
    "inferenceservices": [
        ("status",),
        ("spec", "canary"),
        ("spec", "explainer"),
        ("spec", "transformer"),
        ("spec", "predictor", "workerSpec"),
        *[("spec", "predictor", name) for name in FRAMEWORKS],
    ],
}


def _drop(schema: dict, path: tuple[str, ...]) -> None:
    node = schema
    for key in path[:-1]:
        node = node["properties"][key]
    del node["properties"][path[-1]]


def main(checkout: str, ref: str) -> int:
    commit = subprocess.run(
        ["git", "-C", checkout, "rev-parse", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for crd, name in CRDS.items():
        path = f"config/crd/full/serving.kserve.io_{crd}.yaml"
        text = subprocess.run(
            ["git", "-C", checkout, "show", f"{commit}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        doc = yaml.safe_load(text)
        (version,) = [v for v in doc["spec"]["versions"] if v.get("storage")]
        schema = version["schema"]["openAPIV3Schema"]
        for trimmed in TRIMMED[crd]:
            _drop(schema, trimmed)
        schema["$comment"] = (
            f"openAPIV3Schema of {doc['spec']['group']}/{version['name']} {doc['spec']['names']['kind']}"
            f" from kserve/kserve {ref} ({commit}) {path}, Apache License 2.0;"
            f" trimmed: {', '.join('.'.join(t) for t in TRIMMED[crd])}."
            " Regenerate with scripts/vendor-kserve-schemas.py."
        )
        schema["x-visor-source"] = {
            "repository": "kserve/kserve",
            "ref": ref,
            "commit": commit,
            "path": path,
            "apiVersion": f"{doc['spec']['group']}/{version['name']}",
            "kind": doc["spec"]["names"]["kind"],
        }
        (OUT / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"{OUT / name}: {doc['spec']['names']['kind']} {version['name']}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: vendor-kserve-schemas.py KSERVE_CHECKOUT REF   (e.g. /tmp/kserve v0.20.0)")
    sys.exit(main(sys.argv[1], sys.argv[2]))
