"""``livt-train pretrain | finetune | evaluate``: a thin layer from flags to the stage functions.

Flags mirror the stage config fields (``--batch-size`` sets ``batch_size``); only flags given
explicitly override the recipe / config file. Known errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from torch._dynamo.exc import BackendCompilerFailed
from tqdm.contrib.logging import logging_redirect_tqdm

from livt.flags import add_dataclass_flags, field_flag
from livt.training.checkpoint import CheckpointError
from livt.training.config import (
    STAGE_CONFIGS,
    ConfigError,
    EvaluateConfig,
    build_config,
    list_recipes,
)
from livt.training.distributed import cleanup
from livt.training.engine import TrainingDiverged

# The data set's own "files not found" errors are FileNotFoundError (or subclasses).
KNOWN_ERRORS = (ConfigError, CheckpointError, TrainingDiverged, FileNotFoundError, PermissionError)

# Flags that fill ``dataset_options`` instead of a config field.
_DATA_FLAGS = {
    "imbalance_factor": (float, "long-tail imbalance factor (1 = no subsampling)"),
    "profile": (str, "long-tail profile: exp | step"),
    "val_per_class": (int, "images per class in the balanced val split"),
    "data_seed": (int, "seed of the long-tail subsampling (dataset option 'seed')"),
}


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
        print(f"livt-train {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livt-train", description="LiVT training: MGP, BFT and evaluation")
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
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        add_dataclass_flags(p, STAGE_CONFIGS[stage])
        for name, (type_, help_) in _DATA_FLAGS.items():
            p.add_argument(field_flag(name), type=type_, help=help_)
        p.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="any other dataset option")
        if stage == "finetune":
            p.add_argument("--loss-opt", action="append", metavar="KEY=VALUE", help="any other loss option")
        p.set_defaults(handler=_run_stage, stage=stage)
    p = sub.add_parser(
        "evaluate",
        help="evaluate a finetune run's best (or last) checkpoint",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_flags(p, EvaluateConfig)
    p.set_defaults(handler=_run_evaluate)
    return parser


def _run_stage(args: argparse.Namespace) -> int:
    flags = vars(args)
    overrides = {
        k: v for k, v in flags.items() if k in {f.name for f in dataclasses.fields(STAGE_CONFIGS[args.stage])}
    }
    data_options = {("seed" if k == "data_seed" else k): flags[k] for k in _DATA_FLAGS if k in flags}
    data_options.update(_key_values(flags.get("data_opt", []), "--data-opt"))
    if data_options:
        overrides["dataset_options"] = data_options
    if flags.get("loss_opt"):
        overrides["loss_options"] = _key_values(flags["loss_opt"], "--loss-opt")
    recipe, config = flags.get("recipe"), flags.get("config")
    resume = flags.get("resume", False)
    if resume and recipe is None and config is None and "out" in flags:
        # Continuing a run: its own config.yaml is the starting point.
        config = Path(flags["out"]) / "config.yaml"
    cfg = build_config(args.stage, recipe=recipe, config=config, overrides=overrides)
    kwargs = {
        "resume_run": resume,
        "overwrite": flags.get("overwrite", False),
        "progress": not flags.get("quiet"),
    }
    if args.stage == "pretrain":
        from livt.training.pretrain import pretrain

        pretrain(cfg, **kwargs)
    else:
        from livt.training.finetune import finetune

        finetune(cfg, **kwargs)
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from livt.training.evaluate import evaluate_run

    flags = vars(args)
    cfg = EvaluateConfig(
        **{k: v for k, v in flags.items() if k in {f.name for f in dataclasses.fields(EvaluateConfig)}}
    )
    out = evaluate_run(cfg, progress=not flags.get("quiet"))
    logging.getLogger("livt").info("wrote %s", out)
    return 0


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
