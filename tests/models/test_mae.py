import dataclasses

import numpy as np
import pytest
import torch

from livt.models import MAEConfig, MaskedAutoencoder, ViTConfig, create_classifier, get_2d_sincos_pos_embed

MICRO = ViTConfig(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=32, depth=2, num_heads=2)
DECODER = MAEConfig(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def make_mae(in_chans=3, **mae_changes):
    return MaskedAutoencoder(
        dataclasses.replace(MICRO, in_chans=in_chans), dataclasses.replace(DECODER, **mae_changes)
    )


# --- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "ratio"), [(16, 0.75), (49, 0.75), (49, 0.5), (10, 0.8), (7, 0.3)])
def test_random_masking_counts(length, ratio):
    x = torch.randn(4, length, 8)
    x_masked, mask, ids_restore = MaskedAutoencoder.random_masking(x, ratio)
    keep = int(length * (1 - ratio))
    assert x_masked.shape == (4, keep, 8)
    assert mask.shape == ids_restore.shape == (4, length)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(mask.sum(dim=1), torch.full((4,), float(length - keep)))


def test_random_masking_keeps_visible_tokens_and_restores_order():
    torch.manual_seed(0)
    x = torch.randn(5, 16, 8)
    x_masked, mask, ids_restore = MaskedAutoencoder.random_masking(x, 0.75)
    # The kept tokens are exactly the ones the mask marks visible.
    for sample in range(5):
        visible = x[sample][mask[sample] == 0]
        assert sorted(map(tuple, visible.tolist())) == sorted(map(tuple, x_masked[sample].tolist()))
    # Appending placeholders for the removed tokens and gathering with ids_restore unshuffles.
    filled = torch.cat([x_masked, torch.zeros(5, 16 - x_masked.shape[1], 8)], dim=1)
    restored = torch.gather(filled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, 8))
    torch.testing.assert_close(restored, x * (1 - mask).unsqueeze(-1))


def test_random_masking_differs_per_sample_and_follows_noise():
    torch.manual_seed(0)
    _, mask, _ = MaskedAutoencoder.random_masking(torch.randn(8, 49, 4), 0.75)
    assert len({tuple(row.tolist()) for row in mask}) == 8
    noise = torch.arange(10, dtype=torch.float32).flip(0).unsqueeze(0)  # lowest noise at the end
    _, mask, _ = MaskedAutoencoder.random_masking(torch.randn(1, 10, 4), 0.7, noise=noise)
    assert mask[0].tolist() == [1.0] * 7 + [0.0] * 3


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, True])
def test_random_masking_bad_ratio(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoder.random_masking(torch.randn(1, 16, 4), ratio)


def test_random_masking_nothing_visible():
    with pytest.raises(ValueError, match="no visible token"):
        MaskedAutoencoder.random_masking(torch.randn(1, 4, 4), 0.8)


# --- patches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans", [1, 3])
def test_patchify_round_trip_and_order(in_chans):
    mae = make_mae(in_chans)
    imgs = torch.randn(2, in_chans, 16, 16)
    patches = mae.patchify(imgs)
    assert patches.shape == (2, 16, 4 * 4 * in_chans)
    torch.testing.assert_close(mae.unpatchify(patches), imgs)
    # Patch 6 is row 1, column 2 (row-major, like PatchEmbed); pixels (row, col, channel).
    expected = imgs[:, :, 4:8, 8:12].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(patches[:, 6], expected)


def test_patchify_rejects_wrong_shape():
    mae = make_mae(3)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, 16, 16\)"):
        mae.patchify(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expected patches of shape \(N, 16, 48\)"):
        mae.unpatchify(torch.randn(2, 16, 47))
    with pytest.raises(ValueError, match="expected images"):
        mae(torch.randn(2, 3, 32, 32))


# --- loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_counts_masked_patches_only(norm_pix_loss):
    torch.manual_seed(0)
    mae = make_mae(3, norm_pix_loss=norm_pix_loss)
    imgs = torch.randn(2, 3, 16, 16)
    pred = torch.randn(2, 16, 48)
    _, mask, _ = mae.random_masking(torch.zeros(2, 16, 1), 0.75)
    base = mae.forward_loss(imgs, pred, mask)

    visible_changed = pred + 5.0 * (1 - mask).unsqueeze(-1)
    torch.testing.assert_close(mae.forward_loss(imgs, visible_changed, mask), base)
    masked_changed = pred + 5.0 * mask.unsqueeze(-1)
    assert not torch.isclose(mae.forward_loss(imgs, masked_changed, mask), base)


def test_loss_without_norm_pix_is_plain_mse_over_masked_patches():
    mae = make_mae(1, norm_pix_loss=False)
    imgs = torch.randn(3, 1, 16, 16)
    pred = torch.randn(3, 16, 16)
    mask = torch.zeros(3, 16)
    mask[:, :4] = 1
    expected = ((pred[:, :4] - mae.patchify(imgs)[:, :4]) ** 2).mean()
    torch.testing.assert_close(mae.forward_loss(imgs, pred, mask), expected)


def test_norm_pix_target_uses_unbiased_variance():
    # Every 4x4 patch holds 0..15: mean 7.5, unbiased variance 340 / 15.
    mae = make_mae(1, norm_pix_loss=True)
    patch = torch.arange(16, dtype=torch.float32)
    imgs = mae.unpatchify(patch.expand(1, 16, 16))
    mask = torch.ones(1, 16)
    var = 340.0 / 15.0
    target = (patch - 7.5) / np.sqrt(var + 1e-6)
    assert mae.forward_loss(imgs, target.expand(1, 16, 16), mask).item() == pytest.approx(0.0, abs=1e-10)
    # Predicting zeros costs mean(target ** 2) = (15 / 16) * var / (var + eps) (it would be 1 with
    # the biased variance).
    zeros = torch.zeros(1, 16, 16)
    assert mae.forward_loss(imgs, zeros, mask).item() == pytest.approx(15 / 16 * var / (var + 1e-6), rel=1e-6)


# --- model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shapes_and_gradients(in_chans):
    torch.manual_seed(0)
    mae = make_mae(in_chans)
    loss, pred, mask = mae(torch.randn(2, in_chans, 16, 16))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (2, 16, 16 * in_chans)
    torch.testing.assert_close(mask.sum(dim=1), torch.full((2,), 12.0))
    _, _, mask = mae(torch.randn(2, in_chans, 16, 16), mask_ratio=0.5)
    torch.testing.assert_close(mask.sum(dim=1), torch.full((2,), 8.0))

    loss.backward()
    assert mae.encoder.pos_embed.grad is None and mae.decoder_pos_embed.grad is None
    for name in ("mask_token", "encoder.cls_token", "encoder.patch_embed.proj.weight", "decoder_pred.weight"):
        assert mae.get_parameter(name).grad is not None, name


def test_position_embeddings_are_fixed_sincos():
    mae = make_mae(3)
    assert not mae.encoder.pos_embed.requires_grad and not mae.decoder_pos_embed.requires_grad
    np.testing.assert_allclose(
        mae.encoder.pos_embed[0].numpy(), get_2d_sincos_pos_embed(32, 4, cls_token=True)
    )
    np.testing.assert_allclose(
        mae.decoder_pos_embed[0].numpy(), get_2d_sincos_pos_embed(16, 4, cls_token=True)
    )


def test_init_and_no_weight_decay():
    torch.manual_seed(0)
    mae = make_mae(3)
    params = dict(mae.named_parameters())
    assert mae.no_weight_decay() <= set(params)
    assert torch.count_nonzero(mae.decoder_pred.bias) == 0
    assert torch.count_nonzero(mae.encoder.blocks[0].attn.qkv.bias) == 0
    assert 0.005 < mae.mask_token.std().item() < 0.05
    # xavier-uniform bound for the flattened patch projection: sqrt(6 / (fan_in + fan_out)).
    proj = mae.encoder.patch_embed.proj.weight
    assert proj.abs().max().item() <= np.sqrt(6 / (48 + 32))


def test_encoder_state_dict_loads_into_classifier():
    mae = make_mae(3)
    classifier = create_classifier(dataclasses.replace(MICRO, num_classes=10))
    result = classifier.load_state_dict(mae.encoder.state_dict(), strict=False)
    assert set(result.missing_keys) == {"head.weight", "head.bias"}
    assert result.unexpected_keys == []


def test_reconstruct_images():
    torch.manual_seed(0)
    mae = make_mae(1).eval()
    imgs = torch.randn(2, 1, 16, 16)
    masked, reconstruction, pasted = mae.reconstruct(imgs)
    assert masked.shape == reconstruction.shape == pasted.shape == imgs.shape
    assert not pasted.requires_grad
    removed = masked == 0  # randn pixels are never exactly zero
    assert removed.sum().item() == 2 * 12 * 16  # 12 of 16 patches of 16 pixels each
    torch.testing.assert_close(pasted[~removed], imgs[~removed])
    torch.testing.assert_close(pasted[removed], reconstruction[removed])


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_reconstruct_maps_prediction_back_to_pixels(norm_pix_loss):
    mae = make_mae(1, norm_pix_loss=norm_pix_loss).eval()
    imgs = torch.randn(2, 1, 16, 16)
    torch.manual_seed(1)
    _, reconstruction, _ = mae.reconstruct(imgs)
    torch.manual_seed(1)  # the same mask again
    _, pred, _ = mae(imgs)
    if norm_pix_loss:  # undo the target normalisation with each true patch's mean and std
        patches = mae.patchify(imgs)
        pred = pred * (patches.var(dim=-1, keepdim=True) + 1e-6).sqrt() + patches.mean(dim=-1, keepdim=True)
    torch.testing.assert_close(reconstruction, mae.unpatchify(pred))


def test_tiny_mae_overfits_one_batch():
    # One batch of smooth images and, by reseeding, one mask every step: the model can memorise it.
    torch.manual_seed(0)
    mae = make_mae(1)
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    freqs = [(1, 0), (0, 1), (1, 1), (2, 1)]
    imgs = torch.stack([torch.sin(cols * f / 3 + rows * g / 4) for f, g in freqs]).unsqueeze(1)
    optimizer = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        torch.manual_seed(100)
        loss, _, _ = mae(imgs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < 15 / 16  # better than predicting every patch's mean


def test_mae_config_validation_and_round_trip():
    assert MAEConfig.from_dict(DECODER.to_dict()) == DECODER
    assert MAEConfig() == MAEConfig(512, 8, 16, 0.75, True)
    with pytest.raises(ValueError, match="divisible by decoder_num_heads"):
        MAEConfig(decoder_embed_dim=20, decoder_num_heads=3)
    with pytest.raises(ValueError, match="divisible by 4"):
        MAEConfig(decoder_embed_dim=18, decoder_num_heads=2)
    with pytest.raises(ValueError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder_depth must be a positive int"):
        MAEConfig(decoder_depth=0)
    with pytest.raises(ValueError, match="norm_pix_loss must be a bool"):
        MAEConfig(norm_pix_loss="yes")
    with pytest.raises(ValueError, match=r"unknown MAEConfig field\(s\) \['depth'\]"):
        MAEConfig.from_dict({"depth": 2})
