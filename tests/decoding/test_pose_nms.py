"""OKS-NMS of final poses against a naive loop, and on a duplicated person."""

from __future__ import annotations

import numpy as np
import pytest

from aehg.decoding import Instances
from aehg.decoding.pose_nms import oks_matrix, oks_nms
from aehg.keypoints import COCO_OKS_SIGMAS


def _pose(rng, centre, size, c=17, absent=()):
    kp = np.zeros((c, 3))
    kp[:, :2] = centre + rng.uniform(-size / 2, size / 2, (c, 2))
    kp[:, 2] = 1.0
    kp[list(absent), :] = 0.0
    return kp


def _naive_oks(a, b, sigmas):
    pa, pb = a[:, 2] > 0, b[:, 2] > 0

    def area(k, p):
        xy = k[p, :2]
        return max(float(np.prod(xy.max(0) - xy.min(0))), 1.0) if p.any() else 1.0

    s = (area(a, pa) + area(b, pb)) / 2
    vals = [np.exp(-((a[j, :2] - b[j, :2]) ** 2).sum() / (2 * s * (2 * sigmas[j]) ** 2))
            for j in range(len(a)) if pa[j] and pb[j]]
    return float(np.mean(vals)) if vals else 0.0


def test_oks_matrix_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    kps = np.stack([_pose(rng, rng.uniform(50, 400, 2), 80, absent=rng.choice(17, 4))
                    for _ in range(6)])
    sig = np.asarray(COCO_OKS_SIGMAS)
    ref = np.array([[_naive_oks(a, b, sig) for b in kps] for a in kps])
    np.testing.assert_allclose(oks_matrix(kps), ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.diag(oks_matrix(kps)), 1.0)


def test_oks_nms_removes_a_duplicated_person_and_nothing_else():
    rng = np.random.default_rng(1)
    a, b = _pose(rng, np.array([100.0, 100.0]), 80), _pose(rng, np.array([300.0, 120.0]), 80)
    dup = a.copy()
    dup[:, :2] += rng.normal(0, 0.5, (17, 2))      # the same person, a pixel off
    dup[[3, 4], :] = 0.0                           # with two parts fewer
    near = b.copy()
    near[:, :2] += 25.0                            # a different person right beside b
    kp = np.stack([dup, a, near, b])
    inst = Instances(kp, np.array([0.7, 0.9, 0.6, 0.8]), np.zeros((4, 1)))
    kept = oks_nms(inst, threshold=0.9)
    np.testing.assert_array_equal(kept.scores, np.array([0.9, 0.8, 0.6], np.float32))
    np.testing.assert_array_equal(kept.keypoints, kp[[1, 3, 2]].astype(np.float32))
    assert len(oks_nms(inst[[1, 3, 2]], threshold=0.9)) == 3  # nothing else goes
    with pytest.raises(ValueError, match=r"threshold: expected a value in \(0, 1\]"):
        oks_nms(inst, threshold=0.0)
