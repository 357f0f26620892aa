"""Single-person inference: the crop around a person's centre and scale, and decoding the crop's
maps back to the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aehg.config import EvalConfig
from aehg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, compose, crop_matrix, input_to_output
from aehg.inference import decode_predictions, infer_maps, preprocess
from aehg.models import ObjectMaps, StackedHourglass, StackOutput


def _picture():
    image = np.zeros((120, 200, 3), np.uint8)
    image[40:60, 140:160] = (0, 0, 255)  # a red square around (149.5, 49.5)
    return image


def test_preprocess_crops_the_200_scale_square():
    x, meta = preprocess(_picture(), 64, 16, center=(149.5, 49.5), scale=0.1)
    np.testing.assert_array_equal(meta["input_transform"], crop_matrix((149.5, 49.5), 0.1, 64))
    np.testing.assert_allclose(meta["transform"],
                               compose(input_to_output(64, 16), meta["input_transform"]))
    # 200 · 0.1 = 20 px around the centre fill the input: it is all red (RGB 1, 0, 0).
    red = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x[:, 2:62, 2:62].mean(dim=(1, 2)).numpy(), red, atol=1e-5)
    whole, meta_whole = preprocess(_picture(), 64, 16)
    np.testing.assert_allclose(meta_whole["input_transform"],
                               crop_matrix((99.5, 59.5), 200 / 200, 64))
    with pytest.raises(ValueError, match=r"center and scale: expected both \(a person crop\) or "
                                         r"neither, got center=\(1, 2\), scale=None"):
        preprocess(_picture(), 64, 16, center=(1, 2))


def test_single_pose_maps_decode_to_picture_pixels():
    _, meta = preprocess(_picture(), 64, 16, center=(149.5, 49.5), scale=0.1)
    heat = torch.zeros(1, 16, 16, 16)
    heat[0, :, 7, 7] = 1.0
    heat[0, 3, 7, 7], heat[0, 3, 2, 11] = 0.0, 0.8
    maps = StackOutput(ObjectMaps(heat, torch.zeros(1, 16, 0, 16, 16)))
    (pred,) = decode_predictions(maps, [{**meta, "image_id": 5}], EvalConfig(), "single_pose")
    assert pred.keypoints.shape == (1, 16, 3) and pred.image_id == 5
    # Output pixel (7, 7) is input (29.5, 29.5): 2 input px left of and above the centre,
    # 20/64 picture px each.
    np.testing.assert_allclose(pred.keypoints[0, 0, :2], [149.5 - 0.625, 49.5 - 0.625],
                               atol=1e-4)
    np.testing.assert_allclose(pred.keypoints[0, 3, :2],
                               [149.5 + (45.5 - 31.5) * 20 / 64, 49.5 + (9.5 - 31.5) * 20 / 64],
                               atol=1e-4)
    assert pred.graph.number_of_nodes() == 1


def test_infer_maps_takes_one_crop_per_picture():
    model = StackedHourglass(num_stacks=1, channels=16, depth=2, num_classes=16,
                             embedding_dim=0).eval()
    maps, metas = infer_maps(model, [_picture(), _picture()], 64, 16,
                             crops=[((149.5, 49.5), 0.1), None])
    assert maps.objects.heatmaps.shape == (2, 16, 16, 16)
    np.testing.assert_array_equal(metas[0]["input_transform"],
                                  crop_matrix((149.5, 49.5), 0.1, 64))
    np.testing.assert_allclose(metas[1]["input_transform"], crop_matrix((99.5, 59.5), 1.0, 64))
    with pytest.raises(ValueError, match=r"crops: expected one \(center, scale\) or None per "
                                         r"image \(2\), got 1"):
        infer_maps(model, [_picture(), _picture()], 64, 16, crops=[None])
