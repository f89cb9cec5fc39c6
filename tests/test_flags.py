"""livt.flags: a dataclass or a pydantic settings model to flags, YAML values to the fields' types."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from livt.flags import add_dataclass_flags, add_settings_flags, check_choices, field_flag, plain_values


def _opt(default, **metadata):
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class Options:
    batch_size: int = _opt(64, help="images per step")
    lr: float = _opt(1e-3, help="learning rate")
    amp: bool = _opt(True, help="mixed precision")
    warmup: int | None = _opt(None, help="warm-up steps")
    loss: str = _opt("ce", help="the loss", choices=("ce", "bal-bce"))
    prior: str | None = _opt(None, help="the prior", choices=("train", "balanced"))
    scale: tuple[float, float] = _opt((0.2, 1.0), help="crop scale", group="augmentation")
    seed: int = _opt(0, help="the seed (default: the run's)", aliases=("-s",))
    data_root: str = _opt("", help="where the data lies", name="--data")
    secret: str = _opt("x", flag=False)
    tags: dict = dataclasses.field(default_factory=dict, metadata={"help": "free-form tags"})


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, exit_on_error=False)
    add_dataclass_flags(parser, Options, **kwargs)
    return parser


def test_field_flag_spells_a_field_with_dashes():
    assert field_flag("batch_size") == "--batch-size"


def test_only_the_flags_given_are_in_the_namespace_with_their_types():
    parser = _parser()
    assert vars(parser.parse_args([])) == {}
    args = parser.parse_args(
        ["--batch-size", "8", "--lr", "3e-4", "--no-amp", "--scale", "0.5", "1", "-s", "3"]
    )
    assert vars(args) == {"batch_size": 8, "lr": 3e-4, "amp": False, "scale": [0.5, 1.0], "seed": 3}
    assert parser.parse_args(["--data", "/d"]).data_root == "/d"


def test_none_switches_an_optional_field_off_and_choices_are_checked():
    parser = _parser()
    assert parser.parse_args(["--warmup", "none"]).warmup is None
    assert parser.parse_args(["--warmup", "5"]).warmup == 5
    assert parser.parse_args(["--prior", "none"]).prior is None
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'bce'"):
        parser.parse_args(["--loss", "bce"])


def test_help_names_each_default_once_and_skipped_fields_have_no_flag():
    text = _parser(skip=("lr",)).format_help()
    assert "images per step (default: 64)" in text
    assert "mixed precision (default: on)" in text and "--no-amp" in text
    assert "warm-up steps (default: none)" in text
    assert "{train,balanced,none}" in text and "{ce,bal-bce}" in text
    assert "the seed (default: the run's)" in text and "(default: 0)" not in text
    assert "free-form tags" in text and "free-form tags (default" not in text  # a factory has no one value
    assert "augmentation:" in text  # the group's title
    assert "--lr" not in text and "--secret" not in text
    assert "where the data lies\n" in text  # an empty default is not shown


def test_plain_values_coerce_yaml_values_to_the_field_types():
    values = plain_values(
        Options, {"lr": "1e-3", "batch_size": 32.0, "scale": [0.1, 1], "warmup": None}, "r.yaml"
    )
    assert values == {"lr": 1e-3, "batch_size": 32, "scale": (0.1, 1.0), "warmup": None}
    assert isinstance(values["batch_size"], int) and isinstance(values["scale"][1], float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"batch_size": 1.5}, r"batch_size: expected int, got 1.5"),
        ({"batch_size": True}, r"batch_size: expected int, got True"),
        ({"amp": "yes"}, r"amp: expected bool, got 'yes'"),
        ({"loss": 3}, r"loss: expected str, got 3"),
        ({"lr": "fast"}, r"lr: expected float, got 'fast'"),
        ({"tags": [1]}, r"tags: expected dict, got \[1\]"),
        ({"batchsize": 8}, r"unknown key\(s\) in r.yaml: batchsize; known: amp, batch_size, data_root"),
    ],
)
def test_plain_values_name_the_bad_value(data, message):
    with pytest.raises(ValueError, match=message):
        plain_values(Options, data, "r.yaml")


def test_check_choices_names_the_field_and_its_choices():
    check_choices(Options(prior=None))
    with pytest.raises(ValueError, match=r"loss must be one of ce, bal-bce, got 'bce'"):
        check_choices(Options(loss="bce"))


class Settings(BaseModel):
    port: int = Field(8000, description="the port")
    reload: bool = Field(False, description="reload on change")
    log_level: Literal["info", "warning"] = Field("info", description="how much to log")
    api_key: str | None = Field(None, description="the key")
    workers: int = Field(1, description="worker processes (default: one per core)")


def test_settings_flags_keep_their_values_as_text_for_the_model_to_validate():
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, exit_on_error=False)
    add_settings_flags(parser, Settings, skip=("workers",))
    args = parser.parse_args(["--port", "9000", "--reload", "--log-level", "warning", "--api-key", "k"])
    assert vars(args) == {"port": "9000", "reload": True, "log_level": "warning", "api_key": "k"}
    assert Settings(**vars(args)).port == 9000
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'debug'"):
        parser.parse_args(["--log-level", "debug"])
    text = parser.format_help()
    assert "the port (default: 8000)" in text and "reload on change (default: off)" in text
    assert "the key\n" in text and "--workers" not in text
