"""Golden outputs: training stores some inputs and the outputs its exported model gave; the model
must reproduce them within the tolerance (the repository's check at load: test_golden_at_load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.golden import GoldenMismatch, read_golden, verify_golden
from contract.metadata import load_metadata


def test_export_stores_golden_outputs_the_model_reproduces(digits_repo: Path) -> None:
    import onnxruntime as ort

    version_dir = digits_repo / "digits" / "1"
    golden = load_metadata(version_dir).golden
    assert golden is not None and (version_dir / golden.path).is_file()
    inputs, outputs = read_golden(version_dir, golden)
    assert len(inputs) > 0 and outputs.shape == (len(inputs), 10)
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    assert verify_golden(version_dir, golden, lambda x: session.run(None, {name: x})[0], 4) <= 1e-5

    def reversed_run(x):
        return session.run(None, {name: x})[0][:, ::-1]

    with pytest.raises(GoldenMismatch, match="golden check failed"):
        verify_golden(version_dir, golden, reversed_run, 4)
    # the operator's override (VISOR_GOLDEN_TOLERANCE) wins over the stored tolerance
    assert verify_golden(version_dir, golden, reversed_run, 4, tolerance=1.0) > golden.tolerance
