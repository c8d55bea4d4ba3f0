"""One loaded model version, and which versions a policy serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from contract.metadata import ModelMetadata
from service.backends import Backend
from service.batching import AdaptiveBatcher
from service.metrics import VersionMetrics
from service.monitoring import VersionMonitor
from service.postprocess import Postprocessor
from service.settings import Settings
from service.types import ModelInfo, ModelStatus


def batch_limit(settings: Settings, device: str) -> int:
    """The largest batch for a backend running on ``device``: capped on the CPU."""
    # A CPU gains no throughput from large batches, only latency and arena memory
    # (docs/benchmarks.md); GPUs keep max_batch_size.
    if device in ("CPUExecutionProvider", "CPU"):
        return min(settings.max_batch_size, settings.cpu_max_batch_size)
    return settings.max_batch_size


def warmup_sizes(settings: Settings, limit: int | None = None) -> list[int]:
    """The batch sizes to run before a version reports ready: 1, 2, 4 … and the batch limit."""
    if settings.warmup_batch_sizes:
        return sorted(set(settings.warmup_batch_sizes))
    limit = limit or settings.max_batch_size
    sizes, n = [], 1
    while n < limit:
        sizes.append(n)
        n *= 2
    return [*sizes, limit]


@dataclass
class LoadedVersion:
    """Everything one serving version owns: backend, batcher, postprocessing, metrics."""

    name: str
    version: int
    path: Path
    meta: ModelMetadata
    kind: str
    backend: Backend
    batcher: AdaptiveBatcher
    metrics: VersionMetrics
    settings: Settings
    monitor: VersionMonitor | None = None  # None when VISOR_MONITORING is off
    post: Postprocessor = field(init=False)

    def __post_init__(self) -> None:
        self.post = Postprocessor(self.meta, self.settings.default_top_k)

    def info(self, status: ModelStatus) -> ModelInfo:
        return ModelInfo(
            self.name,
            self.version,
            status,
            metadata=self.meta,
            backend=self.kind,
            device=self.backend.device,
            max_batch_size=batch_limit(self.settings, self.backend.device),
        )
