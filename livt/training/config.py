"""Typed stage configs: one dataclass per stage, validated on creation.

``livt.training.config_sources`` builds them from defaults, a recipe, a config file and flags.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from livt.flags import check_choices, plain_values
from livt.images import INTERPOLATIONS
from livt.metrics import FEW_THRESHOLD, MANY_THRESHOLD
from livt.prior import SMOOTHING_TOWARD

_logger = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
# Experiment trackers (livt.training.tracking); "none" keeps a run to its own folder.
TRACKERS = ("none", "tensorboard", "mlflow", "wandb")
TEST_SPLITS = ("auto", "test", "val")
# Optional TrainConfig fields that override the preset's shape (``vit_config`` keywords).
MODEL_SIZE_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


class ConfigError(ValueError):
    """A config value, recipe or config file that cannot be used."""


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text also documents the matching command-line flag."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """Fields shared by both training stages (the only keys allowed at the top of a recipe)."""

    stage: ClassVar[str] = ""

    dataset: str = _opt("", "data set name from the livt.data registry (e.g. fashion-mnist-lt)")
    data_root: str | None = _opt(None, "folder holding the data set files")
    dataset_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra build_dataset options", "flag": False}
    )
    model: str = _opt("", "model preset (livt.models.vit_config name)")
    img_size: int | None = _opt(None, "input size in pixels (default: the data set's native size)")
    patch_size: int | None = _opt(None, "patch size in pixels (default: the model's)")
    embed_dim: int | None = _opt(None, "transformer width (default: the model's)")
    depth: int | None = _opt(None, "transformer blocks (default: the model's)")
    num_heads: int | None = _opt(None, "attention heads (default: the model's)", aliases=("--heads",))
    mlp_ratio: float | None = _opt(None, "MLP hidden width / embed_dim (default: the model's)")
    epochs: int = _opt(100, "training epochs")
    batch_size: int = _opt(64, "images per device per micro-batch")
    accum_steps: int = _opt(1, "micro-batches accumulated per optimizer step")
    min_steps_per_epoch: int = _opt(
        10,
        "fewest optimizer steps an epoch may have: a batch too large for the data set is lowered to "
        "give them and the lr scaled by the same linear rule (0 = keep the batch)",
    )
    blr: float = _opt(1e-3, "base learning rate; lr = blr * effective batch / 256")
    lr: float | None = _opt(None, "absolute learning rate (overrides --blr)")
    min_lr: float = _opt(1e-6, "final learning rate of the cosine schedule")
    warmup_epochs: float = _opt(5.0, "linear warm-up length in epochs (stepped per optimizer step)")
    weight_decay: float = _opt(0.05, "AdamW weight decay (none on norms, biases, position/class/mask tokens)")
    betas: tuple[float, float] = _opt((0.9, 0.999), "AdamW betas")
    clip_grad: float | None = _opt(None, "clip the gradient norm to this value")
    crop_scale: float = _opt(
        0.08, "smallest area fraction of the random resized crop (ImageNet's 0.08 is harsh on tiny images)"
    )
    seed: int = _opt(0, "seed of model init, data order and augmentation")
    workers: int | None = _opt(None, "DataLoader workers (default min(4, CPUs))")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N")
    precision: str = _opt("auto", "auto: bf16 on CUDA, fp32 on CPU", choices=PRECISIONS)
    compile: bool = _opt(False, "torch.compile the model")
    logger: str = _opt(
        "none",
        "experiment tracking: TensorBoard (RUN_DIR/tensorboard), MLflow (RUN_DIR/mlflow.db) or W&B "
        "(offline unless WANDB_MODE says otherwise)",
        choices=TRACKERS,
    )
    out: str = _opt("", "run folder (default: runs/STAGE/NAME, numbered NAME2, NAME3... never to overwrite)")

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.dataset_options = dict(self.dataset_options or {})
        _require(bool(self.dataset), "dataset is required (--dataset NAME or a recipe)")
        for name in ("img_size", *MODEL_SIZE_FIELDS):
            value = getattr(self, name)
            _require(value is None or value > 0, f"{name} must be > 0, got {value}")
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}")
        _require(
            self.min_steps_per_epoch >= 0, f"min_steps_per_epoch must be >= 0, got {self.min_steps_per_epoch}"
        )
        _require(self.blr > 0, f"blr must be > 0, got {self.blr}")
        _require(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}")
        _require(
            0 <= self.warmup_epochs <= self.epochs,
            f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {list(self.betas)}",
        )
        _require(self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be > 0, got {self.clip_grad}")
        _require(0 < self.crop_scale <= 1, f"crop_scale must be in (0, 1], got {self.crop_scale}")
        _check_common(self)

    def model_sizes(self) -> dict[str, Any]:
        """The model-size overrides that are set, as ``vit_config`` keyword arguments."""
        return {k: getattr(self, k) for k in MODEL_SIZE_FIELDS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON-ready) with the stage name first."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return {"stage": self.stage, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from plain data (as ``to_dict`` writes it), coercing YAML strings such as ``1e-3``."""
        data = dict(data)
        stage = data.pop("stage", cls.stage)
        if stage != cls.stage:
            raise ConfigError(f"config is for stage {stage!r}, not {cls.stage!r}")
        return cls(**plain_config(cls, data, f"{cls.stage} config"))

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """``field: mine -> theirs`` for every field that differs, except those in ``ignore``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{k}: {mine[k]!r} -> {theirs.get(k)!r}"
            for k in mine
            if k not in ignore and mine[k] != theirs.get(k)
        ]


@dataclass
class PretrainConfig(TrainConfig):
    """Masked generative pretraining (MGP): an MAE on the long-tailed training images, no labels."""

    stage: ClassVar[str] = "pretrain"

    epochs: int = _opt(800, "training epochs")
    blr: float = _opt(1.5e-4, "base learning rate; lr = blr * effective batch / 256")
    min_lr: float = _opt(0.0, "final learning rate of the cosine schedule")
    warmup_epochs: float = _opt(40.0, "linear warm-up length in epochs (stepped per optimizer step)")
    betas: tuple[float, float] = _opt((0.9, 0.95), "AdamW betas")
    crop_scale: float = _opt(0.2, "smallest area fraction of the random resized crop (MAE: 0.2)")
    mask_ratio: float = _opt(0.75, "fraction of patches hidden from the encoder")
    norm_pix_loss: bool = _opt(True, "regress per-patch normalised pixels")
    decoder_embed_dim: int = _opt(512, "MAE decoder width")
    decoder_depth: int = _opt(8, "MAE decoder blocks")
    decoder_num_heads: int = _opt(16, "MAE decoder attention heads")
    init: str | None = _opt(
        None,
        "continue MGP from a pretrain run folder or an MAE / timm / DeiT checkpoint (its decoder "
        "where it has one); the model's shape is the checkpoint's unless --model is given",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            bool(self.model) or self.init is not None, "model is required (--model NAME, a recipe or --init)"
        )
        _require(0 < self.mask_ratio < 1, f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        for name in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads"):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _require(
            self.decoder_embed_dim % self.decoder_num_heads == 0,
            f"decoder_embed_dim ({self.decoder_embed_dim}) must be divisible by "
            f"decoder_num_heads ({self.decoder_num_heads})",
        )


@dataclass
class FinetuneConfig(TrainConfig):
    """Balanced fine-tuning (BFT): the MGP encoder plus a linear head, trained with a balanced loss."""

    stage: ClassVar[str] = "finetune"

    init: str | None = _opt(
        None,
        "pretrain run folder, or an MAE / timm / DeiT checkpoint (file or timm model folder), "
        "whose encoder initialises the model",
    )
    from_scratch: bool = _opt(False, "start from random weights instead of --init")
    loss: str = _opt("bal-bce", "loss name (livt.training.losses registry)")
    tau: float = _opt(1.0, "strength of the prior bias in balanced losses")
    loss_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra build_loss options", "flag": False}
    )
    layer_decay: float | None = _opt(0.75, "layer-wise lr decay (1 = off)")
    drop_path: float = _opt(0.1, "stochastic depth rate")
    aa: str | None = _opt("rand-m9-mstd0.5-inc1", "RandAugment policy (timm string); 'none' = off")
    reprob: float = _opt(0.25, "random erasing probability")
    mixup: float = _opt(0.8, "mixup alpha (0 = off)")
    cutmix: float = _opt(1.0, "cutmix alpha (0 = off)")
    smoothing: float = _opt(0.1, "label smoothing")
    smoothing_toward: str = _opt(
        "prior",
        "what a balanced loss smooths toward: its prior (every class stays first on its own images at "
        "any imbalance) or uniform (the paper's, which crosses at high imbalance)",
        choices=SMOOTHING_TOWARD,
    )
    ema_decay: float = _opt(
        0.0,
        "keep an EMA of the weights with this decay (timm ModelEmaV3, warmed up); val, the best "
        "checkpoint and test then use it (0 = off)",
    )
    crop_pct: float = _opt(1.0, "eval center-crop fraction (resize to img_size / crop_pct first)")
    interpolation: str = _opt("bicubic", "resize interpolation", choices=INTERPOLATIONS)
    many: int = _opt(MANY_THRESHOLD, "classes with more training images than this are many-shot")
    few: int = _opt(FEW_THRESHOLD, "classes with fewer training images than this are few-shot")
    test_split: str = _opt(
        "auto",
        "split the best checkpoint is scored on at the end (auto: test, or val with a note where the "
        "data set has no test split)",
        choices=TEST_SPLITS,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.loss_options = dict(self.loss_options or {})
        if isinstance(self.aa, str) and self.aa.lower() in ("", "none"):
            self.aa = None
        _require(
            (self.init is not None) != self.from_scratch,
            "give exactly one of --init RUN_DIR|CHECKPOINT and --from-scratch",
        )
        _require(bool(self.model) or self.init is not None, "model is required with --from-scratch")
        _require(self.tau >= 0, f"tau must be >= 0, got {self.tau}")
        _require(
            self.layer_decay is None or 0 < self.layer_decay <= 1,
            f"layer_decay must be in (0, 1], got {self.layer_decay}",
        )
        _require(0 <= self.drop_path < 1, f"drop_path must be in [0, 1), got {self.drop_path}")
        _require(0 <= self.reprob <= 1, f"reprob must be in [0, 1], got {self.reprob}")
        _require(self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0")
        _require(0 <= self.smoothing < 1, f"smoothing must be in [0, 1), got {self.smoothing}")
        _require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _require(0 < self.crop_pct <= 1, f"crop_pct must be in (0, 1], got {self.crop_pct}")
        _require(0 <= self.few <= self.many, f"need 0 <= few ({self.few}) <= many ({self.many})")


@dataclass
class EvaluateConfig:
    """Evaluate a finished run's ``best`` (or ``last``) checkpoint on one split."""

    # --run-dir: torchrun's parser would take "--run" for an abbreviation of its own --run-path.
    run: str = _opt("", "run folder to evaluate", aliases=("--run-dir",))
    checkpoint: str = _opt("best", "a run without a best checkpoint uses last", choices=("best", "last"))
    dataset: str | None = _opt(None, "data set name (default: the run's)")
    data_root: str | None = _opt(None, "folder holding the data set files (default: the run's)")
    split: str = _opt("test", "split to score", choices=("train", "val", "test"))
    out: str | None = _opt(None, "output folder (default: RUN_DIR/eval-SPLIT)")
    batch_size: int = _opt(256, "images per batch")
    workers: int | None = _opt(None, "DataLoader workers (default min(4, CPUs))")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N")
    precision: str = _opt("auto", "auto: bf16 on CUDA, fp32 on CPU", choices=PRECISIONS)

    def __post_init__(self) -> None:
        _require(bool(self.run), "run is required (--run RUN_DIR)")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check_common(self)


STAGE_CONFIGS: dict[str, type[TrainConfig]] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_common(config: Any) -> None:
    """The fields with choices, and those that say where and how fast a stage runs (every config has them)."""
    try:
        check_choices(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    workers, device = config.workers, config.device
    _require(workers is None or workers >= 0, f"workers must be >= 0, got {workers}")
    _require(
        device in DEVICES or device.startswith("cuda:"),
        f"device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}",
    )


def plain_config(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` in the field types of ``cls``; ``ConfigError`` naming an unknown key or a wrong value."""
    try:
        return plain_values(cls, data, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
