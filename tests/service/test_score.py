"""``python -m service score``: a folder with unreadable files, scored locally and on Spark
local[2] (identical rows), every output format resumable, bad flags refused in one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.__main__ import main
from service.scoring.output import read_parts
from service.scoring.spark import partitions
from tests.helpers import ROOT
from tests.helpers.models import encode, reference_probabilities, write_version

GOOD = 10
BAD = {"corrupt.png": "cannot identify image file", "truncated.png": "could not be decoded"}


def score(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "score", *args, "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny 8x8 model, 10 good PNGs (two folders deep, other sizes too) and 2 bad ones."""
    root = tmp_path_factory.mktemp("score")
    write_version(root / "models", "tiny", 1)
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(GOOD):
        pixels = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
        path = images / ("sub" if i % 2 else "") / f"{i:02d}.png"
        path.write_bytes(encode(pixels))
        expected[str(path)] = reference_probabilities(pixels[None])[0]
    (images / "corrupt.png").write_bytes(b"this is not an image")
    (images / "truncated.png").write_bytes(encode(np.zeros((8, 8, 1), np.uint8))[:40])
    (images / "notes.txt").write_text("not an image suffix: not scored")
    return {"model": str(root / "models" / "tiny"), "images": str(images), "expected": expected}


def _check_rows(rows: pd.DataFrame, data: dict) -> None:
    assert len(rows) == GOOD + len(BAD) and rows["path"].is_unique
    for _, row in rows.iterrows():
        name = Path(row["path"]).name
        if name in BAD:
            assert BAD[name] in row["error"] and row["label"] is None, row
            continue
        assert row["error"] is None, row
        probs = np.asarray(row["probabilities"])
        np.testing.assert_allclose(probs, data["expected"][row["path"]], atol=1e-6)
        assert row["label"] == ["top", "bottom", "left"][int(np.argmax(probs))]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values("path").reset_index(drop=True)
    frame["probabilities"] = frame["probabilities"].map(lambda p: [float(x) for x in p])
    frame["labels"] = frame["labels"].map(list)
    return frame.astype(object).where(frame.notna(), None)


def test_jsonl_scores_reports_errors_and_resumes_a_cut_file(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    first = score("--model", data["model"], "--input", data["images"], "--output", str(out))
    assert first.returncode == 0, first.stderr
    assert "errors: 2 file(s)" in first.stdout and "corrupt.png:" in first.stdout
    full = pd.read_json(out, lines=True, dtype=False)
    _check_rows(_sorted(full), data)

    again = score("--model", data["model"], "--input", data["images"], "--output", str(out))
    assert "scored 0 image(s)" in again.stdout, again.stdout
    # NOTE: an interrupted run: five whole lines, then half of the sixth
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:25])
    resumed = score("--model", data["model"], "--input", data["images"], "--output", str(out))
    assert f"scored {GOOD + len(BAD) - 5} image(s)" in resumed.stdout, resumed.stdout
    pd.testing.assert_frame_equal(
        _sorted(pd.read_json(out, lines=True, dtype=False)), _sorted(full)
    )


def test_csv_round_trips(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    done = score("--model", data["model"], "--input", data["images"] + "/**/*.png",
                 "--output", str(out), "--batch-size", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    from service.scoring.output import LinesOutput

    _check_rows(_sorted(LinesOutput(out).read()), data)


def test_local_and_spark_give_identical_rows_and_both_resume(data: dict, tmp_path: Path) -> None:
    local = tmp_path / "local.parquet"
    args = ("--model", data["model"], "--input", data["images"])
    assert score(*args, "--output", str(local), "--part-rows", "4").returncode == 0
    parts = sorted(local.glob("part-*.parquet"))
    assert len(parts) == 3  # 12 rows, 4 a part
    full = _sorted(read_parts(local))
    _check_rows(full, data)

    # an interrupted local run: a part lost, a half-written one left behind under its dot-name
    parts[1].unlink()
    (local / ".part-123.parquet.tmp").write_bytes(b"PAR1 half")
    resumed = score(*args, "--output", str(local), "--part-rows", "4")
    assert "scored 4 image(s)" in resumed.stdout, resumed.stdout + resumed.stderr
    assert not list(local.glob(".part-*")) and len(list(local.glob("part-*"))) == 3
    pd.testing.assert_frame_equal(_sorted(read_parts(local)), full)

    # Spark starts from one part the local engine wrote and must score only the other 8
    spark = tmp_path / "spark.parquet"
    spark.mkdir()
    shutil.copy(parts[0], spark / parts[0].name)
    done = score(*args, "--output", str(spark), "--engine", "spark", "--master", "local[2]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 8 image(s)" in done.stdout and "errors: 2 file(s)" in done.stdout, done.stdout
    pd.testing.assert_frame_equal(_sorted(read_parts(spark)), full)

    again = score(*args, "--output", str(spark), "--engine", "spark")
    assert "scored 0 image(s)" in again.stdout, again.stdout


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--output", "OUT/x.txt"], ".parquet, .csv or .jsonl"),
        (["--output", "OUT/x.csv", "--batch-size", "0"], "--batch-size"),
        (["--output", "OUT/x.csv", "--engine", "spark"], "give a .parquet --output"),
        (["--output", "OUT/x.csv", "--input", "/nonexistent/*.png"], "matches no image"),
        (["--output", "OUT/x.csv", "--model", "/nonexistent"], "holds no model version"),
        (["--output", "OUT/x.csv", "--threshold", "2"], "threshold must be in [0, 1]"),
        (["--output", "OUT/x.csv", "--threshold", "0.5", "--target-recall", "0.5"], "not allowed"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(
    data: dict, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list, needle: str
) -> None:
    flags = [f.replace("OUT", str(tmp_path)) for f in flags]
    base = {"--model": data["model"], "--input": data["images"]}
    argv = ["score", *[x for k, v in base.items() if k not in flags for x in (k, v)], *flags]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own checks
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "error:" in err[-1] and needle in err[-1], err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_a_parquet_table_of_bytes_scores_like_the_files(
    data: dict, tmp_path: Path, engine: str
) -> None:
    files = sorted(p for p in Path(data["images"]).rglob("*.png"))
    table = tmp_path / "images.parquet"
    # NOTE: paths nothing can open: the bytes must come from the table's content column
    pd.DataFrame(
        {"path": [f"s3://bucket{p}" for p in files], "content": [p.read_bytes() for p in files]}
    ).to_parquet(table)
    out = tmp_path / f"scores.{'jsonl' if engine == 'local' else 'parquet'}"
    args = ("--model", data["model"], "--input", str(table), "--output", str(out))
    done = score(*args, "--engine", engine)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_json(out, lines=True, dtype=False) if engine == "local" else read_parts(out)
    rows["path"] = rows["path"].str.removeprefix("s3://bucket")
    _check_rows(_sorted(rows), data)


@pytest.mark.parametrize(
    ("cores", "rows", "part_rows", "tasks"),
    [(2, 5, 10_000, 2), (2, 20_000, 10_000, 2), (2, 20_001, 10_000, 4), (8, 100, 10, 16)],
)
def test_spark_tasks_hold_at_most_part_rows_in_full_waves(
    cores: int, rows: int, part_rows: int, tasks: int
) -> None:
    assert partitions(cores, rows, part_rows) == tasks
