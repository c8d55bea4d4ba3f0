"""Helpers the tests share (fixtures stay in the conftest.py files): ``models`` (a tiny ONNX model
and repositories of it), ``servers`` (real servers on loopback ports), ``wires`` (one Open
Inference Protocol request over each wire), ``browser`` (headless Chromium), ``training``
(synthetic image folders and the training CLI)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
