"""Affine helpers: pixel-centre convention, round trips, flips, boxes, jitter and normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aehg.config import AugmentConfig
from aehg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AffineParams,
    affine_matrix,
    apply_affine,
    color_jitter,
    compose,
    input_to_output,
    invert_affine,
    normalize_image,
    random_affine_params,
    transform_boxes,
    warp_image,
    warp_mask,
)


def test_validation_transform_fits_long_side_and_centres():
    # 300 x 600 (h, w) into 512: scale 512/600; the image's outer pixel edges land on the input's.
    m = affine_matrix((300, 600), 512)
    s = 512 / 600
    edges = apply_affine(np.array([[-0.5, -0.5], [599.5, 299.5]]), m)
    pad = (512 - 300 * s) / 2
    np.testing.assert_allclose(edges, [[-0.5, -0.5 + pad], [511.5, 511.5 - pad]], atol=1e-9)


def test_input_to_output_is_pixel_centre_formula():
    m = input_to_output(512, 128)
    p = np.array([[0.0, 0.0], [3.0, 7.0], [511.0, 100.5]])
    np.testing.assert_allclose(apply_affine(p, m), (p + 0.5) / 4 - 0.5)
    with pytest.raises(ValueError, match="multiple"):
        input_to_output(500, 128)


def test_rotation_is_about_the_image_centre_and_counter_clockwise():
    h, w = 101, 201
    m = affine_matrix((h, w), 256, AffineParams(rotation=90.0))
    centre = apply_affine(np.array([(w - 1) / 2, (h - 1) / 2]), m)
    np.testing.assert_allclose(centre, [127.5, 127.5], atol=1e-9)
    # A point to the right of the centre goes up on screen (y decreases) for +90 degrees.
    right = apply_affine(np.array([(w - 1) / 2 + 10, (h - 1) / 2]), m)
    assert right[1] < centre[1] - 1 and abs(right[0] - centre[0]) < 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_compose_and_invert_round_trip(seed):
    rng = np.random.default_rng(seed)
    params = random_affine_params(rng, AugmentConfig(flip_prob=0.5))
    m_in = affine_matrix((480, 640), 512, params)
    m = compose(input_to_output(512, 128), m_in)
    pts = rng.uniform(-50, 700, size=(20, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(pts, m), invert_affine(m)), pts,
                               atol=1e-9)
    # compose applies the last matrix first.
    np.testing.assert_allclose(apply_affine(pts, m),
                               apply_affine(apply_affine(pts, m_in), input_to_output(512, 128)))


def test_flip_mirrors_input_pixels():
    base = affine_matrix((200, 300), 64, AffineParams(rotation=12.0, scale=1.1))
    flipped = affine_matrix((200, 300), 64, AffineParams(rotation=12.0, scale=1.1, flip=True))
    pts = np.array([[10.0, 20.0], [150.0, 100.0]])
    a, b = apply_affine(pts, base), apply_affine(pts, flipped)
    np.testing.assert_allclose(b[:, 0], 63 - a[:, 0])
    np.testing.assert_allclose(b[:, 1], a[:, 1])


def test_warp_image_follows_point_mapping():
    # A single bright pixel at integer (x, y) must appear where the matrix maps (x, y).
    img = np.zeros((90, 120, 3), dtype=np.uint8)
    img[40, 70] = 255
    m = affine_matrix((90, 120), 120, AffineParams(shift=(0.05, -0.1)))  # scale 1: pure shift
    out = warp_image(img, m, 120)
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    np.testing.assert_allclose(apply_affine(np.array([70.0, 40.0]), m), [x, y], atol=1e-6)


def test_warp_mask_pads_with_ones_and_binarises():
    mask = np.zeros((50, 50), dtype=np.float32)
    out = warp_mask(mask, affine_matrix((50, 50), 64, AffineParams(scale=0.5)), 64)
    assert set(np.unique(out)) == {0.0, 1.0}
    assert out[0, 0] == 1.0 and out[32, 32] == 0.0


def test_transform_boxes_matches_corner_loop():
    boxes = np.array([[10, 20, 50, 80], [0, 0, 5, 5]], dtype=float)
    m = affine_matrix((100, 100), 128, AffineParams(rotation=30, scale=0.9))
    out = transform_boxes(boxes, m)
    for b, o in zip(boxes, out, strict=True):
        corners = np.array([[b[0], b[1]], [b[2], b[1]], [b[0], b[3]], [b[2], b[3]]])
        c = np.array([m[:, :2] @ p + m[:, 2] for p in corners])
        np.testing.assert_allclose(o, [*c.min(0), *c.max(0)])


def test_color_jitter_bounds_and_identity():
    rng = np.random.default_rng(0)
    img = rng.random((8, 8, 3), dtype=np.float32)
    assert color_jitter(img, rng, 0.0) is img
    out = color_jitter(img.copy(), rng, 0.4)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out, img)


def test_normalize_image_is_imagenet_chw():
    img = np.full((2, 3, 3), 0.5, dtype=np.float32)
    out = normalize_image(img)
    assert out.shape == (3, 2, 3)
    np.testing.assert_allclose(out[:, 0, 0], (0.5 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)


def test_random_params_within_ranges():
    cfg = AugmentConfig(rotation=30, scale_min=0.75, scale_max=1.25, translate=0.2, flip_prob=0.5)
    rng = np.random.default_rng(1)
    ps = [random_affine_params(rng, cfg) for _ in range(200)]
    assert all(abs(p.rotation) <= 30 and 0.75 <= p.scale <= 1.25 for p in ps)
    assert all(max(abs(s) for s in p.shift) <= 0.2 for p in ps)
    flips = sum(p.flip for p in ps)
    assert 60 < flips < 140
    assert math.isclose(random_affine_params(rng, AugmentConfig(rotation=0)).rotation, 0.0)


@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_fast_network_input_matches_reference(jitter):
    from aehg.data.transforms import to_network_input

    bgr = np.random.default_rng(1).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    fast = to_network_input(bgr, np.random.default_rng(7), jitter)
    rgb = bgr[..., ::-1].astype(np.float32) / 255
    ref = normalize_image(color_jitter(rgb, np.random.default_rng(7), jitter))
    assert fast.shape == (3, 40, 30) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    # By hand for one pixel without jitter.
    b, g, r = bgr[3, 4].astype(float) / 255
    if jitter == 0:
        np.testing.assert_allclose(fast[:, 3, 4], (np.array([r, g, b]) - IMAGENET_MEAN)
                                   / IMAGENET_STD, rtol=1e-5)
