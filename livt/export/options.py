"""``ExportOptions``: everything ``livt-export`` can be asked for, validated on creation.

The command line is generated from these fields (``livt.flags``), so each default and help text is
written here once. Torch-free, so ``livt-export --help`` starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livt.export.errors import ExportError
from livt.metrics import FEW_THRESHOLD, MANY_THRESHOLD
from livt.prior import DEFAULT_RULE, PRIOR_RULES

FORMATS = ("onnx", "openvino", "tensorrt", "triton")
CALIBRATION_CHOICES = ("auto", "none", "temperature", "bcts", "vector")
INT8_MODE_CHOICES = ("dynamic", "static")
TRITON_PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan", "openvino")
MIN_OPSET = 17  # first opset with LayerNormalization


def _opt(default: Any, help: str, group: str | None = None, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, "group": group, **metadata})


@dataclass(frozen=True)
class EngineProfile:
    """The batch range a TensorRT engine accepts and the batch size it is tuned for."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ExportError(
                f"need 1 <= --min-batch <= --opt-batch <= --max-batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )


@dataclass
class ExportOptions:
    """What to export and how to check it; raises ``ExportError`` naming an unsupported choice."""

    run_dir: Path = _opt(
        None, "fine-tune run folder (holds checkpoints/best|last)", name="--run", metavar="RUN", required=True
    )
    out: Path = _opt(None, "X.onnx, X.plan, or a Triton repository folder", required=True)
    format: str = _opt(
        "onnx",
        "artifact kind (openvino: the ONNX plus X.ov-int8.onnx, NNCF INT8 on val images, and OpenVINO "
        "fp32/bf16/int8 rows in the parity and accuracy tables)",
        choices=FORMATS,
    )
    checkpoint: str = _opt("best", "which checkpoint", choices=("best", "last"))
    data_root: Path | None = _opt(None, "data folder, if not the one the run recorded")
    # folding
    prior: str = _opt(
        "balanced", "balanced | train | PATH.json | PATH.csv: the prior folded into the head", "folding"
    )
    prior_rule: str = _opt(
        DEFAULT_RULE, "how the prior moves the calibrated logits", "folding", choices=PRIOR_RULES
    )
    calibrate: str = _opt(
        "auto",
        "fit a calibrator on the balanced val split and fold it: auto (the best of temperature, bcts, "
        "vector by cross-validated NLL, or none; nothing without a val split), one method, or none",
        "folding",
        choices=CALIBRATION_CHOICES,
        nargs="?",
        const="auto",
    )
    calibration_folds: int = _opt(5, "cross-validation folds for --calibrate", "folding")
    # ONNX
    opset: int = _opt(17, f"ONNX opset (>= {MIN_OPSET})", "ONNX")
    int8: bool = _opt(False, "also write an INT8 model (X.int8.onnx or X.qdq.onnx)", "ONNX")
    int8_mode: str | None = _opt(
        None,
        "INT8 kind (default: dynamic for ONNX, static Q/DQ for TensorRT)",
        "ONNX",
        choices=INT8_MODE_CHOICES,
    )
    calibration_images: int = _opt(
        256, "images for static INT8 (training images) and OpenVINO's NNCF INT8 (val images)", "ONNX"
    )
    # verification and evaluation
    atol: float = _opt(1e-4, "max |logit diff| vs PyTorch for FP32", "verification and evaluation")
    int8_min_agreement: float = _opt(0.9, "min top-1 agreement for INT8/FP16", "verification and evaluation")
    verify_samples: int = _opt(
        256, "images (val, else test) checked against PyTorch", "verification and evaluation"
    )
    eval_split: str | None = _opt(
        "auto",
        "split for the per-variant accuracy table (auto: test where the run has one, else val)",
        "verification and evaluation",
        choices=("auto", "val", "test"),
    )
    eval_limit: int | None = _opt(None, "evaluate on at most this many images", "verification and evaluation")
    many: int | None = _opt(
        None,
        f"many-shot: more training images than this (default: the run's, else {MANY_THRESHOLD})",
        "verification and evaluation",
    )
    few: int | None = _opt(
        None,
        f"few-shot: fewer training images than this (default: the run's, else {FEW_THRESHOLD})",
        "verification and evaluation",
    )
    threads: int | None = _opt(
        None, "ONNX Runtime intra-op threads (default: all cores)", "verification and evaluation"
    )
    workers: int = _opt(0, "data loading processes for streamed splits", "verification and evaluation")
    # TensorRT
    fp16: bool = _opt(False, "FP16 engine (LayerNorm and softmax pinned to FP32)", "TensorRT")
    min_batch: int | None = _opt(None, "engine profile minimum batch (default: 1)", "TensorRT")
    opt_batch: int | None = _opt(None, "engine profile batch to tune for (default: 8)", "TensorRT")
    max_batch: int | None = _opt(None, "engine profile maximum batch (default: 128)", "TensorRT")
    workspace_gib: float = _opt(4.0, "builder workspace limit in GiB", "TensorRT")
    timing_cache_dir: Path | None = _opt(None, "reuse TensorRT timing caches from this folder", "TensorRT")
    # Triton
    triton_name: str = _opt("livt", "model name in the repository", "Triton")
    triton_platform: str = _opt("onnxruntime_onnx", "Triton backend", "Triton", choices=TRITON_PLATFORMS)
    triton_max_batch: int = _opt(128, "max_batch_size in config.pbtxt", "Triton")
    # Built once, from min/opt/max_batch, when the export builds an engine.
    engine_profile: EngineProfile | None = field(default=None, init=False, metadata={"flag": False})

    def __post_init__(self) -> None:
        self.run_dir, self.out = Path(self.run_dir), Path(self.out)
        self.validate()

    def validate(self) -> None:
        """Raise ``ExportError`` naming the first unsupported option or combination."""
        engine = self.builds_engine
        if self.format not in FORMATS:
            raise ExportError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.calibrate not in CALIBRATION_CHOICES:
            raise ExportError(f"--calibrate must be one of {CALIBRATION_CHOICES}, got {self.calibrate!r}")
        if self.prior_rule not in PRIOR_RULES:
            raise ExportError(f"--prior-rule must be one of {PRIOR_RULES}, got {self.prior_rule!r}")
        if self.calibration_folds < 2:
            raise ExportError(f"--calibration-folds must be >= 2, got {self.calibration_folds}")
        if self.fp16 and not engine:
            raise ExportError("--fp16 needs a TensorRT engine (--format tensorrt); ONNX exports stay FP32")
        if not engine and any(b is not None for b in (self.min_batch, self.opt_batch, self.max_batch)):
            raise ExportError(
                "--min-batch/--opt-batch/--max-batch shape a TensorRT engine; use --format tensorrt"
            )
        if self.int8_mode is not None and not self.int8:
            raise ExportError("--int8-mode needs --int8")
        if self.int8_mode not in (None, *INT8_MODE_CHOICES):
            raise ExportError(f"--int8-mode must be 'dynamic' or 'static', got {self.int8_mode!r}")
        if engine and self.int8_mode == "dynamic":
            raise ExportError("TensorRT INT8 needs explicit Q/DQ: use --int8-mode static (or leave it out)")
        if self.format in ("onnx", "openvino") and self.out.suffix != ".onnx":
            raise ExportError(f"--out for --format {self.format} must end in .onnx, got {self.out}")
        if self.format == "tensorrt" and self.out.suffix not in (".plan", ".engine"):
            raise ExportError(f"--out for --format tensorrt must end in .plan or .engine, got {self.out}")
        if self.format == "triton" and self.out.suffix:
            raise ExportError(f"--out for --format triton is a model repository folder, got {self.out}")
        if self.eval_split not in (None, "auto", "val", "test"):
            raise ExportError(
                f"--eval-split must be 'auto', 'val', 'test' or 'none', got {self.eval_split!r}"
            )
        if self.format != "triton" and self.out.is_dir():
            raise ExportError(
                f"--out {self.out} is a folder; name the file to write (e.g. {self.out / 'model.onnx'})"
            )
        if self.atol < 0 or not 0 <= self.int8_min_agreement <= 1:
            raise ExportError("--atol must be >= 0 and --int8-min-agreement within [0, 1]")
        if self.opset < MIN_OPSET:
            raise ExportError(
                f"--opset {self.opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}"
            )
        # An unset threshold comes from the run (pipeline.group_thresholds), which checks the pair again.
        if any(v is not None and v < 0 for v in (self.few, self.many)) or (
            self.few is not None and self.many is not None and self.few > self.many
        ):
            raise ExportError(f"need 0 <= --few ({self.few}) <= --many ({self.many})")
        if self.verify_samples < 1:
            raise ExportError("--verify-samples must be >= 1")
        if self.workers < 0:
            raise ExportError(f"--workers must be >= 0, got {self.workers}")
        if engine:
            self.engine_profile = EngineProfile(
                self.min_batch or 1, self.opt_batch or 8, self.max_batch or 128
            )

    @property
    def calibrates(self) -> bool:
        return self.calibrate != "none"

    @property
    def calibration_needs_val(self) -> bool:
        """A named method needs the val split; ``auto`` is none where there is no val to fit on."""
        return self.calibrate not in ("auto", "none")

    @property
    def resolved_int8_mode(self) -> str | None:
        if not self.int8:
            return None
        return self.int8_mode or ("dynamic" if self.format in ("onnx", "openvino") else "static")

    @property
    def builds_engine(self) -> bool:
        return self.format == "tensorrt" or (
            self.format == "triton" and self.triton_platform == "tensorrt_plan"
        )
