"""A model repository for the page and document tests: the tiny model (tests/service/svc_helpers)
with a ``report/`` folder as training writes it, and a second version that fails to load."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.service.svc_helpers import write_version

CARD_TEXT = "# tiny v1\n\nA fixture model card.\n"


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def site_repo(root: Path) -> Path:
    """``tiny/1`` (ready, with report/) and ``tiny/2`` (checksum mismatch: failed).

    Beside the model, ``secret.txt`` and a symlink ``report/escape.png`` pointing at it: the
    report route must never serve a file outside ``report/``.
    """
    models = root / "models"
    version = write_version(models, "tiny", 1)
    report = version / "report"
    report.mkdir()
    for name, colour in (("training_curves", (200, 0, 0)), ("pr_curves", (0, 0, 200))):
        (report / f"{name}.png").write_bytes(png(colour))
    (report / "MODEL_CARD.md").write_text(CARD_TEXT)
    (report / "notes.txt").write_text("not a report file")
    (root / "secret.png").write_bytes(png((0, 0, 0)))
    (report / "escape.png").symlink_to(root / "secret.png")
    write_version(models, "tiny", 2, bad_sha=True)
    return models
