import itertools

import pytest
import torch

from livt.models import MAEConfig, MaskedAutoencoder, create_classifier, vit_config
from livt.training.optim import build_optimizer, build_scheduler, current_lr, scaled_lr


def _groups_by_param(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g["params"]}


def test_lr_scaling_rule():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_no_weight_decay_on_norms_biases_and_tokens():
    model = MaskedAutoencoder(
        vit_config("vit_micro"), MAEConfig(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    )
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    groups = _groups_by_param(opt, model)
    assert groups["encoder.cls_token"]["weight_decay"] == 0
    assert groups["mask_token"]["weight_decay"] == 0
    assert groups["encoder.blocks.0.norm1.weight"]["weight_decay"] == 0
    assert groups["encoder.blocks.0.attn.qkv.bias"]["weight_decay"] == 0
    assert groups["encoder.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert groups["decoder_pred.weight"]["weight_decay"] == 0.05
    assert "encoder.pos_embed" not in groups  # fixed sin-cos table: not optimised at all
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_layer_decay_scales_blocks_and_spares_pos_embed_from_decay():
    model = create_classifier(vit_config("vit_micro"))  # depth 2: layers 0 (embed), 1, 2 (blocks), 3 (head)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.5)
    groups = _groups_by_param(opt, model)
    assert groups["head.weight"]["lr_scale"] == 1.0
    assert groups["blocks.1.mlp.fc1.weight"]["lr_scale"] == 0.5
    assert groups["blocks.0.mlp.fc1.weight"]["lr_scale"] == 0.25
    assert groups["patch_embed.proj.weight"]["lr_scale"] == 0.125
    assert groups["pos_embed"]["weight_decay"] == 0 and groups["cls_token"]["weight_decay"] == 0
    # the schedule applies the scales
    sched = build_scheduler(opt, total_steps=10, warmup_steps=0, min_lr=0.0)
    sched.step_update(0)
    assert groups["blocks.0.mlp.fc1.weight"]["lr"] == pytest.approx(0.25e-3)


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = build_scheduler(opt, total_steps=20, warmup_steps=5, min_lr=0.01)
    lrs = []
    for step in range(20):
        sched.step_update(step)
        lrs.append(current_lr(opt))
    assert lrs[:6] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    decay = lrs[5:]
    assert all(a > b for a, b in itertools.pairwise(decay))
    mid = 5 + 15 // 2  # step 7 of the 15-step cosine
    assert lrs[mid] == pytest.approx(
        0.01 + 0.99 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 15)).item())
    )
    sched.step_update(20)
    assert current_lr(opt) == pytest.approx(0.01)
