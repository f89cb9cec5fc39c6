"""``livt-train pretrain | finetune | evaluate | export-encoder | list``: flags to the stage functions, thinly.

Flags mirror the stage config fields (``--batch-size`` sets ``batch_size``); only flags given
explicitly override the recipe / config file. Known errors print one line and exit with status 2.
A stage ends by printing where it wrote and the command that comes next.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from torch._dynamo.exc import BackendCompilerFailed
from tqdm.contrib.logging import logging_redirect_tqdm

from livt import __version__
from livt.data import DatasetNotFoundError
from livt.flags import add_dataclass_flags, field_flag
from livt.training.checkpoint import CheckpointError
from livt.training.config import MODEL_SIZE_FIELDS, STAGE_CONFIGS, ConfigError, EvaluateConfig, TrainConfig
from livt.training.config_sources import build_config, config_to_yaml, list_recipes
from livt.training.distributed import cleanup
from livt.training.engine import TrainingDiverged
from livt.training.export_encoder import EXPORT_FORMATS
from livt.training.progress import PROGRESS_MODES, console_progress
from livt.training.rundir import plan_run_dir, run_log

# The data set's own "files not found" errors are FileNotFoundError (or subclasses).
KNOWN_ERRORS = (ConfigError, CheckpointError, TrainingDiverged, FileNotFoundError, PermissionError)
LISTS = ("recipes", "models", "datasets", "losses")

# Flags that fill ``dataset_options`` instead of a config field.
_DATA_FLAGS: dict[str, dict[str, Any]] = {
    "imbalance_factor": {"type": float, "help": "long-tail imbalance factor (1 = no subsampling)"},
    "profile": {"type": str, "help": "long-tail profile: exp | step"},
    "val_per_class": {"type": int, "help": "images per class in the balanced val split"},
    "data_seed": {"type": int, "help": "seed of the long-tail subsampling (dataset option 'seed')"},
    "channels": {"type": int, "help": "image folder: 1 (grey) or 3 (default: what the images are)"},
    "mean": {"type": float, "nargs": "+", "help": "image folder: per-channel mean (default: computed)"},
    "std": {"type": float, "nargs": "+", "help": "image folder: per-channel std (default: computed)"},
}
# What a finetune after a pretrain run needs again: the same data, and the encoder's shape.
_CARRIED = ("recipe", "dataset", "data_root", "model", "img_size", *MODEL_SIZE_FIELDS, *_DATA_FLAGS, "device")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        with logging_redirect_tqdm():
            return args.handler(args)
    except KNOWN_ERRORS as exc:
        print(f"livt-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BackendCompilerFailed as exc:
        # torch.compile fails lazily, at the first step; its message names the cause (no C++ compiler...).
        print(f"livt-train {args.command}: error: --compile failed (run without it): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"livt-train {args.command}: interrupted; a run that saved a checkpoint continues with "
            "--resume --out RUN_DIR",
            file=sys.stderr,
        )
        return 130
    finally:
        cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livt-train", description="LiVT training: MGP, BFT and evaluation")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage, helptext in (
        ("pretrain", "masked generative pretraining (MAE) on the long-tailed training images"),
        ("finetune", "balanced fine-tuning of a pretrained encoder (or from scratch)"),
    ):
        p = sub.add_parser(stage, help=helptext, argument_default=argparse.SUPPRESS)
        p.add_argument("--recipe", help=f"recipe name ({', '.join(list_recipes())}) or YAML path")
        p.add_argument("--config", help="a run's config.yaml (or a recipe file) to start from")
        p.add_argument(
            "--resume", action="store_true", help="continue the run in --out from checkpoints/last"
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
        _add_progress_flags(p)
        p.add_argument(
            "--print-config", action="store_true", help="print the resolved config as YAML and exit"
        )
        add_dataclass_flags(p, STAGE_CONFIGS[stage])
        for name, kwargs in _DATA_FLAGS.items():
            p.add_argument(field_flag(name), **kwargs)
        p.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="any other dataset option")
        if stage == "finetune":
            p.add_argument("--loss-opt", action="append", metavar="KEY=VALUE", help="any other loss option")
        p.set_defaults(handler=_run_stage, stage=stage)
    p = sub.add_parser(
        "evaluate",
        help="evaluate a finetune run's best (or last) checkpoint",
        argument_default=argparse.SUPPRESS,
    )
    _add_progress_flags(p)
    add_dataclass_flags(p, EvaluateConfig)
    p.set_defaults(handler=_run_evaluate)
    p = sub.add_parser(
        "export-encoder",
        help="write a run's encoder as the timm (model folder) or MAE (.pth) releases do, for --init or timm",
    )
    p.add_argument("run", help="a pretrain or finetune run folder")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="timm", help="release format (default: timm)")
    p.add_argument(
        "--out", help="where to write (default: RUN/export/encoder-timm or RUN/export/encoder-mae.pth)"
    )
    p.set_defaults(handler=_run_export_encoder)
    p = sub.add_parser("list", help="the recipes, models, data sets and losses there are")
    p.add_argument("what", nargs="?", choices=LISTS, help="one list (default: all)")
    p.set_defaults(handler=_run_list)
    return parser


def _add_progress_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        help="auto (default): progress bars on a terminal, else one line an epoch; bar; line; none: "
        "not even the epoch lines (train.log has them)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (--progress line)")


def _progress_mode(flags: dict[str, Any]) -> str:
    return flags.get("progress") or ("line" if flags.get("quiet") else "auto")


def _run_stage(args: argparse.Namespace) -> int:
    flags = vars(args)
    fields = {f.name for f in dataclasses.fields(STAGE_CONFIGS[args.stage])}
    overrides = {k: v for k, v in flags.items() if k in fields}
    data_options = {("seed" if k == "data_seed" else k): flags[k] for k in _DATA_FLAGS if k in flags}
    data_options.update(_key_values(flags.get("data_opt", []), "--data-opt"))
    if data_options:
        overrides["dataset_options"] = data_options
    if "init" in flags and "model" not in flags and not (Path(flags["init"]) / "checkpoints").is_dir():
        # A downloaded checkpoint brings its own shape: a recipe's model is the one its MGP run trains
        # (which a livt run folder still matches, so its config keeps naming it).
        overrides["model"] = ""
    if flags.get("loss_opt"):
        overrides["loss_options"] = _key_values(flags["loss_opt"], "--loss-opt")
    recipe, config = flags.get("recipe"), flags.get("config")
    resume = flags.get("resume", False)
    if resume and recipe is None and config is None and "out" in flags:
        # Continuing a run: its own config.yaml is the starting point.
        config = Path(flags["out"]) / "config.yaml"
    # Held for train.log: what resolving the config says (a recipe's data options dropped) belongs to the run.
    with run_log(), console_progress(_progress_mode(flags)) as bars:
        cfg = build_config(args.stage, recipe=recipe, config=config, overrides=overrides)
        if flags.get("print_config"):
            return _print_config(cfg)
        kwargs = {"resume_run": resume, "overwrite": flags.get("overwrite", False), "progress": bars}
        if args.stage == "pretrain":
            from livt.training.pretrain import pretrain

            run_dir = pretrain(cfg, **kwargs)
        else:
            from livt.training.finetune import finetune

            run_dir = finetune(cfg, **kwargs)
    print(f"wrote {run_dir}")
    print("next:")
    if args.stage == "pretrain":
        carried = [word for name in _CARRIED if name in flags for word in _flag(name, flags[name])]
        carried += [word for item in flags.get("data_opt", []) for word in ("--data-opt", item)]
        print("  " + shlex.join(["livt-train", "finetune", *carried, "--init", str(run_dir)]))
    else:
        export = [
            "livt-export",
            "--run",
            str(run_dir),
            "--out",
            str(run_dir / "export" / "model.onnx"),
        ]
        print("  " + shlex.join(export))
    return 0


def _print_config(cfg: TrainConfig) -> int:
    """The config a run would use, with what the data set infers and the run folder it would take."""
    from livt.training.stage import resolve_data_options

    try:
        cfg = resolve_data_options(cfg)
    except DatasetNotFoundError as exc:
        print(f"(the data set is not here, so what it would infer is not shown: {exc})", file=sys.stderr)
    out = cfg.out or str(plan_run_dir(cfg, resume=False, overwrite=False).path)
    print(config_to_yaml(dataclasses.replace(cfg, out=out)), end="")
    return 0


def _flag(name: str, value: Any) -> list[str]:
    """The command-line words that give ``name`` the value ``value`` again."""
    flag = field_flag(name)
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag[2:]}"]
    if isinstance(value, list | tuple):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def _run_evaluate(args: argparse.Namespace) -> int:
    from livt.training.evaluate import evaluate_run

    flags = vars(args)
    cfg = EvaluateConfig(
        **{k: v for k, v in flags.items() if k in {f.name for f in dataclasses.fields(EvaluateConfig)}}
    )
    with console_progress(_progress_mode(flags)) as bars:
        out = evaluate_run(cfg, progress=bars)
    print(f"wrote {out}")
    return 0


def _run_export_encoder(args: argparse.Namespace) -> int:
    from livt.training.export_encoder import export_encoder

    out = export_encoder(Path(args.run), args.format, Path(args.out) if args.out else None)
    print(f"wrote {out}")
    print("next:")
    print("  " + shlex.join(["livt-train", "finetune", "--dataset", "DATASET", "--init", str(out)]))
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from livt.data import list_datasets
    from livt.models import list_presets, vit_config
    from livt.training.losses import LOSSES

    def model_line(name: str) -> str:
        c = vit_config(name)
        return f"{name:<24} {c.img_size} px, patch {c.patch_size}, {c.embed_dim} wide, {c.depth} blocks"

    lists = {
        "recipes": [f"{name:<24} {_recipe_line(name)}" for name in list_recipes()],
        "models": [model_line(name) for name in list_presets()],
        "datasets": list_datasets(),
        "losses": list(LOSSES),
    }
    for what in [args.what] if args.what else LISTS:
        if not args.what:
            print(f"{what}:")
        for line in lists[what]:
            print(f"  {line}" if not args.what else line)
    return 0


def _recipe_line(name: str) -> str:
    """A recipe's data set and model, read from its file."""
    from livt.training.config_sources import recipe_path

    data = yaml.safe_load(recipe_path(name).read_text(encoding="utf-8")) or {}
    return f"{data.get('dataset', '?')}, {data.get('model', '?')}"


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
