"""Resume equality and the NaN stop, through the real stages."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from livt.training import engine
from livt.training.cli import main

from .conftest import TINY

STAGES = {
    "pretrain": ["pretrain", *TINY, "--epochs", "2", "--batch-size", "64"],
    "finetune": ["finetune", *TINY, "--from-scratch", "--epochs", "2", "--batch-size", "64", "--drop-path", "0.1",
                 "--mixup", "0.8", "--cutmix", "1.0", "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25"],
}  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def _interrupt_in_epoch(monkeypatch, epoch: int, exc: BaseException | None = None, poison: bool = False):
    """Make ``epoch`` die after one batch (KeyboardInterrupt), or feed it NaN images (``poison``)."""
    real = engine.train_one_epoch

    def patched(model, loader, *args, **kwargs):
        if kwargs["epoch"] != epoch:
            return real(model, loader, *args, **kwargs)

        def batches():
            for i, (images, targets) in enumerate(loader):
                if poison:
                    yield images * float("nan"), targets
                elif i == 1:
                    raise KeyboardInterrupt
                else:
                    yield images, targets

        return real(model, batches(), *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", patched)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_killed_then_resumed_run_equals_uninterrupted(stage, tmp_path: Path, monkeypatch):
    args = STAGES[stage]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    with monkeypatch.context() as m:
        _interrupt_in_epoch(m, epoch=1)
        assert main([*args, "--out", str(tmp_path / "cut")]) == 130  # killed mid-epoch 1
    assert json.loads((tmp_path / "cut/checkpoints/last/meta.json").read_text())["epoch"] == 0
    assert main([stage, "--resume", "--quiet", "--out", str(tmp_path / "cut")]) == 0

    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    history = [json.loads(line) for line in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1]


def test_absurd_lr_stops_with_step_and_lr(tmp_path: Path, capsys):
    args = [
        "pretrain",
        *TINY,
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
        "--lr",
        "1e30",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "loss is nan at step" in err and "lr 1e+30" in err
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing diverged was saved


def test_nan_loss_leaves_last_good_checkpoint(tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        _interrupt_in_epoch(m, epoch=1, poison=True)
        assert main(["pretrain", *TINY, "--epochs", "2", "--out", str(out)]) == 2
    assert "loss is nan at step 12 (epoch 1" in capsys.readouterr().err
    meta = json.loads((out / "checkpoints/last/meta.json").read_text())
    assert meta["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in _weights(out).values())
    assert main(["pretrain", "--resume", "--quiet", "--out", str(out)]) == 0  # the checkpoint still resumes
