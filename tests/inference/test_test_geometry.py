"""eval.keep_aspect keeps a wide picture's scale; eval.project_to_input decodes at input
resolution with peaks where the keypoints are."""

from __future__ import annotations

import numpy as np
import torch

import aehg
from aehg.config import config_from_dict
from aehg.data.transforms import apply_affine, invert_affine
from aehg.inference import Predictor, preprocess, project_maps
from aehg.inference.preprocess import aspect_input_shape
from aehg.models import ObjectMaps, StackOutput, build_model


def _blob_picture(h, w, cx, cy):
    img = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 16] = 255
    return img


def test_keep_aspect_keeps_the_scale_of_a_wide_picture():
    img = _blob_picture(100, 400, 300, 40)
    assert aspect_input_shape((100, 400), 128, 64) == (128, 512)
    x, meta = preprocess(img, 128, 32, keep_aspect=True, divisor=64)
    assert tuple(x.shape) == (3, 128, 512)
    m = meta["input_transform"]
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 1.28)   # short side 100 -> 128
    square, sq_meta = preprocess(img, 128, 32)                # long side 400 -> 128: 0.32
    np.testing.assert_allclose(sq_meta["input_transform"][:, :2], np.eye(2) * 0.32)
    # The blob lands where the transform says, in the picture's own proportions.
    bx, by = apply_affine(np.array([300.0, 40.0]), m)
    lum = x.numpy().sum(0)
    ys, xs = np.nonzero(lum > lum.mean() + 3 * lum.std())
    assert abs(xs.mean() - bx) < 1.0 and abs(ys.mean() - by) < 1.0
    # Output pixels map back to the picture through the inverse of "transform".
    back = apply_affine(apply_affine(np.array([[300.0, 40.0]]), meta["transform"]),
                        invert_affine(meta["transform"]))
    np.testing.assert_allclose(back, [[300.0, 40.0]], atol=1e-9)


def test_projected_peaks_sit_within_half_an_input_pixel_of_the_keypoints():
    rng = np.random.default_rng(0)
    stride, size = 4, 32
    pts = rng.uniform(4, size - 5, (6, 2))          # sub-pixel keypoints on the output grid
    yy, xx = np.mgrid[0:size, 0:size]
    heat = np.stack([np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2))
                     for x, y in pts]).astype(np.float32)[None]
    maps = StackOutput(ObjectMaps(torch.from_numpy(heat), torch.zeros(1, 6, 1, size, size)))
    up = project_maps(maps, stride)
    assert tuple(up.objects.heatmaps.shape) == (1, 6, size * stride, size * stride)
    inst = aehg.decode_objects(up.objects.heatmaps[0], up.objects.tags[0], top_k=6,
                               detection_threshold=0.5)
    found = inst.keypoints[np.arange(6), inst.labels, :2]
    expected = (pts[inst.labels] + 0.5) * stride - 0.5   # output → input pixels (§7)
    err = np.abs(found - expected).max()
    assert err <= 0.5, err
    # Without projection the same peaks are only on the output grid (up to 2 input pixels off).
    coarse = aehg.decode_objects(heat[0], np.zeros((6, 1, size, size), np.float32), top_k=6,
                                 detection_threshold=0.5)
    c_xy = coarse.keypoints[np.arange(6), coarse.labels, :2]
    assert np.abs((c_xy + 0.5) * stride - 0.5 - (pts[coarse.labels] + 0.5) * stride + 0.5
                  ).max() > err


def test_predictor_with_keep_aspect_and_projection_on_a_wide_picture(tmp_path):
    from aehg.checkpoint import save_checkpoint
    from aehg.config import config_to_dict

    cfg = config_from_dict({"model": {"num_stacks": 1, "channels": 16, "depth": 2,
                                      "num_classes": 3, "embedding_dim": 1},
                            "data": {"input_size": 64, "output_size": 16,
                                     "flip_map": [0, 1, 2]},
                            "eval": {"keep_aspect": True, "project_to_input": True,
                                     "detection_threshold": 0.0, "max_instances": 3}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for head in model.heads:
        torch.nn.init.normal_(head.weight, std=0.3)
    path = save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(),
                                               "config": config_to_dict(cfg)})
    pictures = [_blob_picture(60, 240, 200, 30), _blob_picture(90, 90, 40, 40)]
    preds = Predictor(None, path).predict_batch(pictures)
    for pred, pic in zip(preds, pictures, strict=True):
        h, w = pic.shape[:2]
        kp = pred.keypoints[pred.keypoints[..., 2] > 0]
        assert len(kp) and (kp[:, 0] >= -1).all() and (kp[:, 0] <= w).all()
        assert (kp[:, 1] >= -1).all() and (kp[:, 1] <= h).all()
