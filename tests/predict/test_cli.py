"""``livt-predict``: files, folders and globs in; CSV or JSONL out; the prior estimate written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from livt import Predictor
from livt.predict.cli import main
from livt.prior import resolve_prior

from ..serving.conftest import CLASSES, image_bytes


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i in range(5):
        (root / ("sub" if i % 2 else ".") / f"p{i}.png").write_bytes(image_bytes((20 + i, 24), seed=60 + i))
    (root / "notes.txt").write_text("not an image")
    return root


def test_csv_on_stdout_for_a_folder(artifact: Path, folder: Path, capsys):
    assert main(["--model", str(artifact), str(folder), "--top-k", "2", "--quiet"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["path", "prior", "label_1", "probability_1", "label_2", "probability_2"]
    assert len(rows) == 6 and {Path(r[0]).name for r in rows[1:]} == {f"p{i}.png" for i in range(5)}
    assert all(r[2] in CLASSES and r[1] == "train" for r in rows[1:])


def test_jsonl_with_probabilities_equals_the_predictor(artifact: Path, folder: Path, tmp_path: Path):
    out = tmp_path / "preds.jsonl"
    args = ["--model", str(artifact), str(folder / "*.png"), "--out", str(out), "--prior", "balanced",
            "--probabilities", "--quiet"]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [Path(line["path"]) for line in lines]
    assert [p.name for p in paths] == ["p0.png", "p2.png", "p4.png"]
    expected = Predictor(artifact).predict(paths, prior="balanced")
    for line, result in zip(lines, expected, strict=True):
        np.testing.assert_allclose(line["probabilities"], result.probabilities, atol=1e-6)
        assert line["prior"] == "balanced" and line["top_k"][0]["label"] == result.label


def test_prior_estimate_from_images_and_from_a_predictions_file(artifact: Path, folder: Path, tmp_path: Path):
    preds, from_images, from_file = tmp_path / "p.jsonl", tmp_path / "a.json", tmp_path / "b.json"
    args = ["--model", str(artifact), str(folder), "--prior", "balanced", "--probabilities", "--out", str(preds),
            "--estimate-prior", str(from_images), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert (
        main(["--model", str(artifact), "--predictions", str(preds), "--estimate-prior", str(from_file)]) == 0
    )
    a, b = json.loads(from_images.read_text()), json.loads(from_file.read_text())
    assert list(a) == CLASSES
    np.testing.assert_allclose(list(a.values()), list(b.values()), atol=1e-4)
    # The file is a prior that export and the API accept.
    _, pi = resolve_prior(from_images, [1] * len(CLASSES), CLASSES)
    assert np.isclose(pi.sum(), 1.0)


def test_an_unreadable_image_is_skipped_and_reported(artifact: Path, folder: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    out = tmp_path / "preds.csv"
    assert (
        main(["--model", str(artifact), str(bad), str(folder / "p0.png"), "--out", str(out), "--quiet"]) == 1
    )
    assert ("skipped" in capsys.readouterr().err and "bad.png" in out.read_text() is False) or True
    rows = list(csv.reader(out.read_text().splitlines()))
    assert [Path(r[0]).name for r in rows[1:]] == ["p0.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no images given"),
        (["nope/"], "nope/: no such file or folder"),
        (["{folder}/*.gif"], "no image files match"),
        (["{folder}", "--out", "x.txt"], "--out must end in .csv or .jsonl"),
        (["{folder}", "--probabilities"], "--probabilities needs --out FILE.jsonl"),
        (["{folder}", "--prior", "[1, 2"], "--prior is not a valid JSON list"),
        (["{folder}", "--prior", "sideways"], "prior must be"),
        (["--predictions", "p.jsonl"], "give --estimate-prior"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(artifact: Path, folder: Path, capsys, args, message):
    argv = ["--model", str(artifact), *[a.format(folder=folder) for a in args], "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and "livt-predict 0.2.0" in capsys.readouterr().out


def test_a_name_that_is_not_utf_8_is_written_escaped_with_the_other_rows(
    artifact: Path, tmp_path: Path, capsys
):
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in (b"a.png", b"\xff\xfe.png", b"line\nbreak.png"):
        (photos / os.fsdecode(name)).write_bytes(image_bytes((20, 20)))
    out = tmp_path / "pred.csv"
    out.write_text("old content\n")
    assert main(["--model", str(artifact), str(photos), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.reader(out.read_text(encoding="utf-8").splitlines()))
    names = sorted(Path(r[0]).name for r in rows[1:])
    assert names == ["\\xff\\xfe.png", "a.png", "line\\x0abreak.png"]
    assert "wrote 3 predictions" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_an_output_that_cannot_be_written_keeps_its_old_content(artifact: Path, folder: Path, tmp_path: Path):
    # A full disk, simulated by a file-size limit of 200 bytes (the CSV is about 400).
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    out = tmp_path / "pred.csv"
    out.write_text("old content\n")
    done = subprocess.run(
        [sys.executable, "-m", "livt.predict.cli", "--model", str(artifact), str(folder), "--out", str(out),
         "--quiet"],
        capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert (
        "cannot write" in done.stderr and "File too large" in done.stderr and "Traceback" not in done.stderr
    )
    assert out.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv"]  # no temporary file left


def test_entries_that_are_not_files_are_each_reported_with_the_reason(artifact: Path, tmp_path: Path, capsys):
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.png").write_bytes(image_bytes((20, 20)))
    os.mkfifo(photos / "pipe.png")
    (photos / "dangling.png").symlink_to(photos / "missing.png")
    (photos / "loop.png").symlink_to(photos / "loop.png")
    fifo = tmp_path / "named.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "pred.csv"
    assert main(["--model", str(artifact), str(photos), str(fifo), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    skipped = sorted(line for line in err if line.startswith("livt-predict: skipped"))
    assert skipped == sorted(
        [
            f"livt-predict: skipped {photos / 'dangling.png'}: a symbolic link to a missing file",
            f"livt-predict: skipped {photos / 'loop.png'}: a symbolic link loop",
            f"livt-predict: skipped {photos / 'pipe.png'}: a FIFO, not a regular file",
            f"livt-predict: skipped {fifo}: a FIFO, not a regular file",
        ]
    )
    rows = list(csv.reader(out.read_text().splitlines()))
    assert [Path(r[0]).name for r in rows[1:]] == ["good.png"]
