"""Where a stage config's values come from: defaults, a recipe, a config file and flags.

Values are resolved in this order, later wins:
dataclass defaults < recipe (``--recipe``) < config file (``--config``) < explicit command-line flags.

A recipe is a YAML file with shared keys at the top level and one section per stage::

    dataset: fashion-mnist-lt          # shared: fields of TrainConfig, valid for both stages
    dataset_options: {imbalance_factor: 100}
    pretrain: {model: vit_fmnist, epochs: 30, mask_ratio: 0.75}
    finetune: {epochs: 15, loss: bal-bce, tau: 1.0}

A layer's ``dataset_options`` belong to the data set named in that layer or below it: a later layer
that names another data set (``--recipe fashion-mnist-lt --dataset imagefolder``) drops them, with a
note in the log, since they describe how to cut the recipe's data set, not the user's.

A run's ``config.yaml`` is the resolved stage config, flat, with a ``stage`` key; it is a valid
``--config`` for the same stage and reproduces the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from livt.training.config import STAGE_CONFIGS, STAGES, ConfigError, TrainConfig, plain_config

_logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).parent / "recipes"


def recipe_path(name: str) -> Path:
    """A recipe file: ``livt/training/recipes/NAME.yaml`` or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(list_recipes())}")
    return path


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def read_stage_values(path: Path | str, stage: str) -> dict[str, Any]:
    """The values a recipe or a run's ``config.yaml`` gives for ``stage`` (flat, not yet validated).

    A recipe contributes its shared keys plus its ``stage`` section; a run config must be of ``stage``.
    """
    path = Path(path)
    cls = STAGE_CONFIGS[stage]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    if "stage" in data:
        if data["stage"] != stage:
            raise ConfigError(f"{path} is a {data['stage']!r} config, not {stage!r}")
        values = {k: v for k, v in data.items() if k != "stage"}
        plain_config(cls, values, str(path))
        return values
    sections = {s: data.pop(s, None) or {} for s in STAGES}
    plain_config(TrainConfig, data, f"{path} (shared keys)")
    plain_config(cls, sections[stage], f"{path} ({stage} section)")
    return merge_values(data, sections[stage])


def merge_values(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge value layers, later wins; option dicts are merged key by key instead of replaced."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def build_config(
    stage: str,
    *,
    recipe: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Resolve a stage config: defaults < recipe < config file < overrides (explicit flags)."""
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    layers = []
    if recipe is not None:
        layers.append((f"recipe {recipe}", read_stage_values(recipe_path(recipe), stage)))
    if config is not None:
        layers.append((str(config), read_stage_values(config, stage)))
    layers.append(("the command line", overrides or {}))
    return STAGE_CONFIGS[stage].from_dict(merge_values(*_scope_dataset_options(layers)))


def _scope_dataset_options(layers: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The layers, less the ``dataset_options`` of a data set that a later layer replaces (noted)."""
    kept: list[dict[str, Any]] = []
    dataset = None
    for where, layer in layers:
        if layer.get("dataset") not in (None, dataset) and dataset is not None:
            dropped = merge_values(*(k.get("dataset_options") or {} for k in kept))
            if dropped:
                _logger.info(
                    "%s sets dataset %s: dropped the dataset options of %s (%s); give one again with "
                    "--data-opt KEY=VALUE to keep it",
                    where, layer["dataset"], dataset, ", ".join(f"{k}={v}" for k, v in dropped.items()),
                )  # fmt: skip
            kept = [{k: v for k, v in earlier.items() if k != "dataset_options"} for earlier in kept]
        dataset = layer.get("dataset", dataset)
        kept.append(layer)
    return kept


def load_run_config(run_dir: Path | str) -> TrainConfig:
    """The config saved in a run folder's ``config.yaml``."""
    path = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    stage = data.get("stage")
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"{path} has no valid 'stage' key (got {stage!r})")
    if stage == "finetune":  # written before the option: those runs smoothed toward uniform
        data.setdefault("smoothing_toward", "uniform")
    return STAGE_CONFIGS[stage].from_dict(data)


def config_to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
