"""Resume equality and the NaN stop, through the real stages."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from livt.training import engine
from livt.training.checkpoint import load_training_state
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
def test_killed_then_resumed_run_equals_uninterrupted(stage, workers, tmp_path: Path, monkeypatch, caplog):
    args = [*STAGES[stage], "--workers", str(workers)]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    with monkeypatch.context() as m, caplog.at_level("WARNING", logger="livt"):
        _interrupt_in_epoch(m, epoch=1)
        assert main([*args, "--out", str(tmp_path / "cut")]) == 130  # killed mid-epoch 1
    assert f"continue with livt-train {stage} --resume --out {tmp_path / 'cut'}" in caplog.text
    assert json.loads((tmp_path / "cut/checkpoints/last/meta.json").read_text())["epoch"] == 0
    assert main([stage, "--resume", "--quiet", "--out", str(tmp_path / "cut")]) == 0

    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    history = [json.loads(line) for line in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1]


def test_interrupted_before_a_checkpoint_says_there_is_nothing_to_resume(tmp_path: Path, monkeypatch, caplog):
    with monkeypatch.context() as m, caplog.at_level("WARNING", logger="livt"):
        _interrupt_in_epoch(m, epoch=0)
        assert main([*STAGES["pretrain"], "--out", str(tmp_path / "r")]) == 130
    assert f"interrupted before the first checkpoint of {tmp_path / 'r'}: nothing to resume" in caplog.text


def test_weight_ema_is_scored_kept_as_best_and_resumed_exactly(tmp_path: Path, monkeypatch):
    args = [*STAGES["finetune"], "--workers", "0", "--ema-decay", "0.9"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    def ema(run: Path) -> dict[str, torch.Tensor]:
        return load_training_state(run / "checkpoints" / "last")["ema"]

    with monkeypatch.context() as m:
        _interrupt_in_epoch(m, epoch=1)
        assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    after_first = ema(tmp_path / "cut")
    assert main(["finetune", "--resume", "--quiet", "--out", str(tmp_path / "cut")]) == 0

    full, cut = ema(tmp_path / "full"), ema(tmp_path / "cut")
    assert not all(torch.equal(full[k], after_first[k]) for k in full)  # it follows the training
    assert full.keys() == _weights(tmp_path / "full").keys()
    assert all(torch.equal(full[k], cut[k]) for k in full)  # the average resumed exactly
    trained = _weights(tmp_path / "full")
    assert not all(torch.equal(full[k], trained[k]) for k in full)  # an average, not the weights
    best = tmp_path / "full" / "checkpoints" / "best"
    if json.loads((best / "meta.json").read_text())["epoch"] == 1:
        kept = load_file(str(best / "model.safetensors"))
        assert all(torch.equal(full[k], kept[k]) for k in full)  # best holds the EMA it scored


def test_resuming_with_an_ema_a_run_saved_without_one_is_refused(tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert main([*STAGES["finetune"], "--epochs", "1", "--out", str(out)]) == 0
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("ema_decay: 0.0", "ema_decay: 0.9"))
    assert main(["finetune", "--resume", "--quiet", "--epochs", "2", "--out", str(out)]) == 2
    assert "saved without a weight EMA" in capsys.readouterr().err


def test_after_step_runs_after_every_optimizer_step():
    model = torch.nn.Linear(4, 2)
    loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, betas=(0.9, 0.999))
    scheduler = build_scheduler(optimizer, total_steps=2, warmup_steps=0, min_lr=0.0)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    seen: list[int] = []
    plan = engine.StepPlan(env, steps_per_epoch=2, accum_steps=2, progress=False, after_step=seen.append)
    engine.train_one_epoch(
        model, loader, lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y), optimizer, scheduler, plan,
        epoch=0, step=5,
    )  # fmt: skip
    assert seen == [6, 7]


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
        engine.StepPlan(env, steps_per_epoch=3, progress=progress), epoch=0, step=0,
    )  # fmt: skip
    assert stats.step == 3 and stats.images_per_s > 0
    err = capsys.readouterr().err
    if progress:
        assert all(f"{key}=" in err for key in ("loss", "lr", "img_s")) and "3/3" in err
    else:
        assert err == ""
