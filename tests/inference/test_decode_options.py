"""decode_predictions passes the pose options of EvalConfig to the decoders."""

from __future__ import annotations

import numpy as np
import torch

import aehg
from aehg.config import EvalConfig
from aehg.inference import decode_predictions
from aehg.models import ObjectMaps, StackOutput


def test_part_order_reaches_group():
    # Tags 0, 0.45, 0.9 for parts 0, 1, 2 and a threshold of 0.5: visiting 0, 1, 2 groups
    # {0, 1} (the mean moves to 0.225, part 2 is 0.675 away); visiting 2, 1, 0 groups {2, 1}.
    heat = np.zeros((1, 3, 16, 16), np.float32)
    tags = np.zeros((1, 3, 1, 16, 16), np.float32)
    for c, (x, y, t) in enumerate(((3, 3, 0.0), (8, 8, 0.45), (13, 13, 0.9))):
        heat[0, c, y, x] = 1.0
        tags[0, c, 0, y, x] = t
    maps = StackOutput(ObjectMaps(torch.from_numpy(heat), torch.from_numpy(tags)))
    meta = [{"transform": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "orig_size": (16, 16)}]
    found = {}
    for order in ((0, 1, 2), (2, 1, 0)):
        cfg = EvalConfig(part_order=list(order), tag_threshold=0.5, refine=False,
                         adjust=False, group_method="greedy")
        (pred,) = decode_predictions(maps, meta, cfg)
        ref = aehg.group(heat[0], tags[0], part_order=order, tag_threshold=0.5, refine=False,
                         adjust=False, method="greedy")
        np.testing.assert_array_equal(pred.keypoints, ref.keypoints)
        found[order] = {tuple(np.flatnonzero(k[:, 2] > 0)) for k in pred.keypoints}
    assert found == {(0, 1, 2): {(0, 1), (2,)}, (2, 1, 0): {(1, 2), (0,)}}


def test_group_method_and_layout_options_reach_group():
    # Two people: parts 0-2 of each; tags 0.2 apart (closer than the threshold), bodies far
    # apart: the layout method keeps them apart, the greedy one can merge their parts.
    rng = np.random.default_rng(0)
    heat = np.zeros((1, 3, 32, 32), np.float32)
    tags = np.zeros((1, 3, 1, 32, 32), np.float32)
    for (cx, cy), t in (((6, 6), 0.0), ((25, 25), 0.2)):
        for c, (dx, dy) in enumerate(((0, -2), (0, 0), (0, 2))):
            heat[0, c, cy + dy, cx + dx] = 0.9 + 0.1 * rng.random()
            tags[0, c, 0, cy + dy, cx + dx] = t
    maps = StackOutput(ObjectMaps(torch.from_numpy(heat), torch.from_numpy(tags)))
    meta = [{"transform": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "orig_size": (32, 32)}]
    for kw in ({"group_method": "greedy"}, {"group_method": "layout", "pose_prior": "flat",
                                           "spatial_weight": 0.3, "merge_ratio": 0.5}):
        cfg = EvalConfig(refine=False, **kw)
        (pred,) = decode_predictions(maps, meta, cfg)
        ref = aehg.group(heat[0], tags[0], refine=False, method=kw["group_method"],
                         **{k: v for k, v in kw.items() if k != "group_method"})
        np.testing.assert_array_equal(pred.keypoints, ref.keypoints)


def _spy_on_group(monkeypatch) -> dict:
    """The keyword arguments of decode_predictions' next call of group (filled in place)."""
    import aehg.inference.decode as decode

    seen = {}
    real = decode.group

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "group", spy)
    return seen


def test_pose_prior_file_reaches_group(tmp_path, monkeypatch):
    seen = _spy_on_group(monkeypatch)
    heat = np.zeros((1, 17, 8, 8), np.float32)
    maps = StackOutput(ObjectMaps(torch.from_numpy(heat), torch.zeros(1, 17, 1, 8, 8)))
    meta = [{"transform": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "orig_size": (8, 8)}]
    cfg = EvalConfig(group_method="greedy", spatial_weight=0.25, confidence_weight=0.75,
                     strong_ratio=0.4, hold_duplicates=False, merge_ratio=0.6, pose_prior="flat",
                     part_order=list(range(17)))
    decode_predictions(maps, meta, cfg)
    assert {k: seen[k] for k in ("method", "spatial_weight", "confidence_weight", "strong_ratio",
                                 "hold_duplicates", "merge_ratio", "pose_prior", "part_order")} \
        == {"method": "greedy", "spatial_weight": 0.25, "confidence_weight": 0.75,
            "strong_ratio": 0.4, "hold_duplicates": False, "merge_ratio": 0.6,
            "pose_prior": "flat", "part_order": list(range(17))}


def test_fitted_prior_reaches_group(monkeypatch):
    # eval.pose_prior "train" hands group the PosePrior stored in eval.fitted_prior.
    from aehg.config import FittedPrior
    from aehg.decoding.prior import PosePrior

    seen = _spy_on_group(monkeypatch)
    mean = [[0.0, -1.5, -0.5], [-1.5, 0.0, -0.8], [-0.5, -0.8, 0.0]]
    std = [[1.0, 0.2, 0.3], [0.2, 1.0, 0.25], [0.3, 0.25, 1.0]]
    maps = StackOutput(ObjectMaps(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 1, 8, 8)))
    meta = [{"transform": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "orig_size": (8, 8)}]
    decode_predictions(maps, meta, EvalConfig(pose_prior="train",
                                              fitted_prior=FittedPrior(mean, std)))
    assert isinstance(seen["pose_prior"], PosePrior)
    np.testing.assert_array_equal(seen["pose_prior"].mean, mean)
    np.testing.assert_array_equal(seen["pose_prior"].std, std)
