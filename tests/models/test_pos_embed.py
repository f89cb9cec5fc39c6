import math

import numpy as np
import pytest
import torch

from livt.models.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed


def test_shape_dtype_and_zero_cls_row():
    emb = get_2d_sincos_pos_embed(16, 5, cls_token=True)
    assert emb.shape == (26, 16)
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], 0.0)
    assert get_2d_sincos_pos_embed(16, 5).shape == (25, 16)
    assert get_2d_sincos_pos_embed(16, (2, 3)).shape == (6, 16)


def test_row_half_and_column_half():
    dim, rows, cols = 32, 3, 4
    emb = get_2d_sincos_pos_embed(dim, (rows, cols)).reshape(rows, cols, dim)
    # First half depends on the row only, second half on the column only.
    np.testing.assert_allclose(emb[:, :, : dim // 2], np.repeat(emb[:, :1, : dim // 2], cols, axis=1))
    np.testing.assert_allclose(emb[:, :, dim // 2 :], np.repeat(emb[:1, :, dim // 2 :], rows, axis=0))
    assert len({row.tobytes() for row in emb.reshape(-1, dim)}) == rows * cols


def test_hand_values_and_norm():
    dim = 8
    emb = get_2d_sincos_pos_embed(dim, 3)
    # Patch (0, 0): sin(0) = 0, cos(0) = 1 in each axis' half.
    np.testing.assert_allclose(emb[0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
    # Patch (row 1, col 2), lowest frequency 1: sin/cos of the position itself.
    patch = emb[1 * 3 + 2]
    np.testing.assert_allclose(
        [patch[0], patch[2], patch[4], patch[6]],
        [math.sin(1), math.cos(1), math.sin(2), math.cos(2)],
        rtol=1e-6,
    )
    # Second frequency 1 / 10000 ** (1 / 2) = 0.01.
    np.testing.assert_allclose(patch[1], math.sin(0.01), rtol=1e-6)
    # Every (sin, cos) pair has unit norm, so each row has norm sqrt(dim / 2).
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), math.sqrt(dim / 2), rtol=1e-6)


@pytest.mark.parametrize("dim", [0, 6, -4])
def test_bad_embed_dim(dim):
    with pytest.raises(ValueError, match="multiple of 4"):
        get_2d_sincos_pos_embed(dim, 4)


def test_interpolate_same_grid_is_identity():
    pos = torch.from_numpy(get_2d_sincos_pos_embed(16, 4, cls_token=True)).unsqueeze(0)
    assert interpolate_pos_embed(pos, 4) is pos


def test_interpolate_new_grid_keeps_cls_and_constants():
    pos = torch.randn(1, 1 + 16, 8)
    pos[:, 1:] = 0.5  # a constant field stays constant under resampling
    out = interpolate_pos_embed(pos, 6)
    assert out.shape == (1, 1 + 36, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1])
    torch.testing.assert_close(out[:, 1:], torch.full((1, 36, 8), 0.5))


def test_interpolate_rejects_non_square():
    with pytest.raises(ValueError, match="square grid"):
        interpolate_pos_embed(torch.zeros(1, 1 + 15, 8), 4)
    with pytest.raises(ValueError, match="shape"):
        interpolate_pos_embed(torch.zeros(17, 8), 4)
