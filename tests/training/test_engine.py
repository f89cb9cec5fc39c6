"""Resume equality and the NaN stop, through the real stages."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from livt.training import engine
from livt.training.cli import main
from livt.training.distributed import DistEnv
from livt.training.optim import build_optimizer, build_scheduler

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


# Workers 2: the augmentation (RandAugment, the crops and random erasing draw from Python's random,
# the flips and the erasing noise from torch) runs in worker processes, whose RNGs no checkpoint holds.
@pytest.mark.parametrize(("stage", "workers"), [("finetune", 0), ("finetune", 2), ("pretrain", 0)])
def test_killed_then_resumed_run_equals_uninterrupted(stage, workers, tmp_path: Path, monkeypatch):
    args = [*STAGES[stage], "--workers", str(workers)]
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
    assert "loss is nan at step 12 (epoch 2/2" in capsys.readouterr().err
    meta = json.loads((out / "checkpoints/last/meta.json").read_text())
    assert meta["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in _weights(out).values())
    assert main(["pretrain", "--resume", "--quiet", "--out", str(out)]) == 0  # the checkpoint still resumes


def test_precision_auto_and_fp32_on_cpu_are_fp32():
    cpu = torch.device("cpu")
    assert engine.resolve_precision("auto", cpu) is None and engine.resolve_precision("fp32", cpu) is None


def test_bf16_on_a_cpu_without_bf16_instructions_is_a_clear_error(monkeypatch):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("oneDNN has no bf16 on this CPU at all")
    # An AVX-512 x86 CPU without AVX512-BF16 / AMX: oneDNN would take it, emulating bf16.
    monkeypatch.setattr(engine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(engine.ConfigError, match=r"no native bf16 instructions.*--precision fp32"):
        engine.resolve_precision("bf16", torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert engine.resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_shows_loss_lr_and_throughput_unless_quiet(progress, capsys):
    model = torch.nn.Linear(4, 2)
    loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, betas=(0.9, 0.999))
    scheduler = build_scheduler(optimizer, total_steps=3, warmup_steps=0, min_lr=0.0)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    stats = engine.train_one_epoch(
        model, loader, lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y), optimizer, scheduler,
        env=env, epoch=0, step=0, steps_per_epoch=3, progress=progress,
    )  # fmt: skip
    assert stats.step == 3 and stats.images_per_s > 0
    err = capsys.readouterr().err
    if progress:
        assert all(f"{key}=" in err for key in ("loss", "lr", "img_s")) and "3/3" in err
    else:
        assert err == ""
