"""decode_single: the argmax per joint with the quarter-pixel step, one person per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aehg.decoding import Instances, decode_single
from aehg.decoding.single import MIN_JOINT_SCORE


def _maps():
    h = np.zeros((3, 5, 6), np.float32)
    h[0, 2, 3], h[0, 2, 4], h[0, 1, 3] = 1.0, 0.5, 0.2    # right higher: x + 0.25; up: y − 0.25
    h[1, 4, 0], h[1, 3, 0] = 2.0, 1.0                     # bottom-left corner: clamped in y
    h[2] = -1.0
    h[2, 0, 1] = h[2, 0, 4] = -0.5                         # a tie: the first pixel wins
    return h


def test_argmax_and_quarter_pixel():
    inst = decode_single(_maps())
    assert isinstance(inst, Instances) and len(inst) == 1
    floor = float(np.float32(MIN_JOINT_SCORE))  # a joint is always placed, score > 0
    # Joint 2: right (-1) = left (-1), no move in x; below (-1) < itself (-0.5): up, clamped.
    assert inst.keypoints.tolist() == [[[3.25, 1.75, 1.0], [0.0, 4.0, 2.0], [1.0, 0.0, floor]]]
    assert inst.scores.tolist() == [pytest.approx((1.0 + 2.0 + floor) / 3)]
    assert inst.tags.shape == (1, 0)
    plain = decode_single(_maps(), adjust=False)
    assert plain.keypoints[0, :, :2].tolist() == [[3.0, 2.0], [0.0, 4.0], [1.0, 0.0]]


def test_batches_and_tensors_agree():
    maps = np.stack([_maps(), _maps()[::-1].copy()])
    out = decode_single(torch.from_numpy(maps))
    assert len(out) == 2
    np.testing.assert_array_equal(out[0].keypoints, decode_single(_maps()).keypoints)
    np.testing.assert_array_equal(out[1].keypoints[0, ::-1], out[0].keypoints[0])


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match=r"heatmaps: expected shape \(C, H, W\) or \(B, C, H, W\), "
                                         r"got \(5, 6\)"):
        decode_single(np.zeros((5, 6)))
    bad = _maps()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="heatmaps: contains NaN or infinite values"):
        decode_single(bad)
