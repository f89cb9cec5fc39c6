from pathlib import Path

import pytest

from livt.training.config import ConfigError, FinetuneConfig, PretrainConfig
from livt.training.config_sources import (
    build_config,
    config_to_yaml,
    list_recipes,
    load_run_config,
    read_stage_values,
)

BASE = {"dataset": "synthetic", "model": "vit_micro", "out": "run"}


def test_defaults_follow_the_paper():
    pre = PretrainConfig(**BASE)
    ft = FinetuneConfig(**BASE, from_scratch=True)
    assert (pre.blr, pre.betas, pre.mask_ratio, pre.weight_decay) == (1.5e-4, (0.9, 0.95), 0.75, 0.05)
    assert (ft.blr, ft.layer_decay, ft.drop_path, ft.loss, ft.tau) == (1e-3, 0.75, 0.1, "bal-bce", 1.0)
    assert (pre.crop_scale, ft.crop_scale) == (0.2, 0.08)  # MAE's and DeiT's random resized crops


@pytest.mark.parametrize(
    ("cls", "changes", "message"),
    [
        (PretrainConfig, {"dataset": ""}, "dataset is required"),
        (PretrainConfig, {"epochs": 0}, "epochs must be >= 1"),
        (PretrainConfig, {"mask_ratio": 1.0}, "mask_ratio must be in"),
        (PretrainConfig, {"precision": "fp16"}, "precision must be one of"),
        (PretrainConfig, {"warmup_epochs": 5, "epochs": 2}, "warmup_epochs must be in"),
        (PretrainConfig, {"decoder_embed_dim": 30, "decoder_num_heads": 4}, "divisible"),
        (PretrainConfig, {"embed_dim": 0}, "embed_dim must be > 0"),
        (PretrainConfig, {"mlp_ratio": -1.0}, "mlp_ratio must be > 0"),
        (PretrainConfig, {"crop_scale": 0.0}, r"crop_scale must be in \(0, 1\]"),
        (FinetuneConfig, {}, "exactly one of --init"),
        (FinetuneConfig, {"init": "x", "from_scratch": True}, "exactly one of --init"),
        (FinetuneConfig, {"from_scratch": True, "layer_decay": 1.5}, "layer_decay"),
        (FinetuneConfig, {"from_scratch": True, "few": 50, "many": 10}, r"few \(50\) <= many \(10\)"),
        (FinetuneConfig, {"from_scratch": True, "ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
    ],
)
def test_validation_names_the_problem(cls, changes, message):
    with pytest.raises(ConfigError, match=message):
        cls(**{**BASE, **changes})


def test_yaml_round_trip(tmp_path: Path):
    cfg = FinetuneConfig(**BASE, init="pre", dataset_options={"imbalance_factor": 10}, clip_grad=1.0,
                         embed_dim=48, depth=1, mlp_ratio=2.0)  # fmt: skip
    tmp_path.joinpath("config.yaml").write_text(config_to_yaml(cfg))
    assert load_run_config(tmp_path) == cfg


def test_a_run_config_from_before_smoothing_toward_smoothed_toward_uniform(tmp_path: Path):
    cfg = FinetuneConfig(**BASE, init="pre")
    assert cfg.smoothing_toward == "prior"  # the default, every recipe's too
    old = config_to_yaml(cfg).replace("smoothing_toward: prior\n", "")
    assert "smoothing_toward" not in old
    tmp_path.joinpath("config.yaml").write_text(old)
    assert load_run_config(tmp_path).smoothing_toward == "uniform"
    with pytest.raises(ConfigError, match="smoothing_toward must be one of"):
        FinetuneConfig(**BASE, init="pre", smoothing_toward="flat")


def test_model_sizes_are_the_overrides_that_are_set():
    assert PretrainConfig(**BASE).model_sizes() == {}
    cfg = PretrainConfig(**BASE, patch_size=8, num_heads=4, mlp_ratio=2)
    assert cfg.model_sizes() == {"patch_size": 8, "num_heads": 4, "mlp_ratio": 2.0}


def test_from_dict_coerces_yaml_strings_and_rejects_unknown_keys():
    cfg = PretrainConfig.from_dict({**BASE, "blr": "1e-3", "betas": [0.9, 0.95]})
    assert cfg.blr == 1e-3 and cfg.betas == (0.9, 0.95)
    with pytest.raises(ConfigError, match=r"unknown key.*mask_ration"):
        PretrainConfig.from_dict({**BASE, "mask_ration": 0.5})
    with pytest.raises(ConfigError, match="epochs: expected int"):
        PretrainConfig.from_dict({**BASE, "epochs": "many"})
    with pytest.raises(ConfigError, match="not 'finetune'"):
        FinetuneConfig.from_dict({**BASE, "stage": "pretrain"})


@pytest.mark.parametrize("recipe", list_recipes())
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_every_recipe_builds_both_stages(recipe, stage):
    extra = {"init": "pre"} if stage == "finetune" else {}
    cfg = build_config(stage, recipe=recipe, overrides={"out": "run", **extra})
    assert cfg.dataset and cfg.stage == stage


def test_recipes_include_the_paper_and_tiny_ones():
    assert {"imagenet-lt-vit-b16", "inat2018-vit-b16", "places-lt-vit-b16", "cifar10-lt", "cifar100-lt",
            "fashion-mnist-lt", "synthetic-tiny"} <= set(list_recipes())  # fmt: skip
    ref = build_config("finetune", recipe="imagenet-lt-vit-b16", overrides={"out": "r", "init": "p"})
    assert (ref.epochs, ref.batch_size * ref.accum_steps * 4, ref.layer_decay, ref.smoothing) == (
        100,
        2048,
        0.75,
        0.1,
    )
    pre = build_config("pretrain", recipe="inat2018-vit-b16", overrides={"out": "r"})
    assert pre.img_size == 128 and pre.batch_size * pre.accum_steps * 4 == 4096


def test_the_fashion_mnist_recipes_ship_the_loss_val_picked():
    # docs/study.md, robustness: smoothed toward the prior, val picked Bal-CE at every imbalance of the
    # grid. That evidence is Fashion-MNIST's; the other recipes keep the paper's Bal-BCE.
    for recipe in list_recipes():
        cfg = build_config("finetune", recipe=recipe, overrides={"out": "r", "init": "p"})
        loss = "bal-ce" if recipe.startswith("fashion-mnist-lt") else "bal-bce"
        assert (cfg.loss, cfg.smoothing_toward, cfg.tau) == (loss, "prior", 1.0), recipe


def test_precedence_recipe_then_config_then_flags(tmp_path: Path):
    run_cfg = build_config(
        "pretrain", recipe="synthetic-tiny", overrides={"out": "a", "epochs": 7, "seed": 3}
    )
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(run_cfg))
    cfg = build_config(
        "pretrain", recipe="synthetic-tiny", config=path,
        overrides={"seed": 9, "dataset_options": {"n_max": 50}},
    )  # fmt: skip
    assert cfg.epochs == 7  # from the config file, over the recipe's 5
    assert cfg.seed == 9  # the flag wins
    # option dicts merge key by key
    assert cfg.dataset_options["n_max"] == 50 and cfg.dataset_options["num_classes"] == 10


def test_recipe_sections_are_checked(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: synthetic\nmask_ratio: 0.5\n")
    with pytest.raises(ConfigError, match=r"shared keys.*mask_ratio"):
        read_stage_values(path, "pretrain")
    path.write_text("dataset: synthetic\nfinetune: {tua: 1}\n")
    with pytest.raises(ConfigError, match=r"finetune section.*tua"):
        read_stage_values(path, "finetune")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        build_config("pretrain", recipe="nope")


@pytest.mark.parametrize(("recipe", "options"), [("fashion-mnist-lt", "imbalance_factor=100, val_per_class=300"),
                                                   ("synthetic-tiny", "num_classes=10")])  # fmt: skip
def test_a_recipes_data_options_stay_with_its_data_set(recipe, options, caplog):
    with caplog.at_level("INFO", logger="livt"):
        cfg = build_config("finetune", recipe=recipe, overrides={"dataset": "imagefolder", "init": "p"})
    assert cfg.dataset_options == {}
    assert "the command line sets dataset imagefolder: dropped the dataset options of" in caplog.text
    assert options in caplog.text
    # the layer that names the data set keeps its own options; a data set named again keeps them too
    flags = {"dataset": "imagefolder", "dataset_options": {"channels": 1}, "init": "p"}
    assert build_config("finetune", recipe=recipe, overrides=flags).dataset_options == {"channels": 1}
    same = build_config(
        "finetune", recipe="fashion-mnist-lt", overrides={"dataset": "fashion-mnist-lt", "init": "p"}
    )
    assert same.dataset_options == {"imbalance_factor": 100, "val_per_class": 300}


def test_a_config_file_of_another_data_set_keeps_its_options_from_the_recipe(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(
        config_to_yaml(build_config("pretrain", overrides={"dataset": "imagefolder", "model": "m"}))
    )
    cfg = build_config("pretrain", recipe="synthetic-tiny", config=path)
    assert cfg.dataset == "imagefolder" and cfg.dataset_options == {}


def test_choices_and_interpolations_are_one_list():
    from livt.images import INTERPOLATIONS, RESAMPLE

    assert tuple(RESAMPLE) == INTERPOLATIONS and "lanczos" in INTERPOLATIONS
    assert FinetuneConfig(**BASE, from_scratch=True, interpolation="lanczos").interpolation == "lanczos"
    with pytest.raises(ConfigError, match="interpolation must be one of nearest, bilinear, bicubic, box"):
        FinetuneConfig(**BASE, from_scratch=True, interpolation="cubic")
    with pytest.raises(ConfigError, match="logger must be one of none, tensorboard"):
        PretrainConfig(**BASE, logger="comet")
    with pytest.raises(ConfigError, match="test_split must be one of auto, test, val"):
        FinetuneConfig(**BASE, from_scratch=True, test_split="train")


def test_out_is_optional_and_the_thresholds_default_beside_class_groups():
    from livt.metrics import FEW_THRESHOLD, MANY_THRESHOLD

    cfg = FinetuneConfig(dataset="synthetic", model="vit_micro", from_scratch=True)
    assert cfg.out == "" and (cfg.many, cfg.few) == (MANY_THRESHOLD, FEW_THRESHOLD) == (100, 20)
