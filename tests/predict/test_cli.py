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
