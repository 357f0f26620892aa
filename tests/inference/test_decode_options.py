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
                         adjust=False)
        (pred,) = decode_predictions(maps, meta, cfg)
        ref = aehg.group(heat[0], tags[0], part_order=order, tag_threshold=0.5, refine=False,
                         adjust=False)
        np.testing.assert_array_equal(pred.keypoints, ref.keypoints)
        found[order] = {tuple(np.flatnonzero(k[:, 2] > 0)) for k in pred.keypoints}
    assert found == {(0, 1, 2): {(0, 1), (2,)}, (2, 1, 0): {(1, 2), (0,)}}
