"""PCKh on real MPII annotations: the ground truth scores 100 %, a case computed by hand, and
jittered predictions scored by an independent loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aehg.data.mpii import MPII_JOINT_NAMES, read_mpii_h5
from aehg.evaluation import pckh, pckh_table

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "mpii_valid_sample" / "valid_first500.h5"
GROUPS = {"Head": (8, 9), "Shoulder": (12, 13), "Elbow": (11, 14), "Wrist": (10, 15),
          "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5)}


@pytest.fixture(scope="module")
def valid():
    return read_mpii_h5(SAMPLE)


def test_ground_truth_as_prediction_is_100_percent(valid):
    m = pckh(valid.part, valid.part, valid.normalize)
    assert m["PCKh@0.5"] == 1.0 and m["PCKh@0.1"] == 1.0
    for g in GROUPS:
        assert m[f"PCKh@0.5/{g}"] == 1.0
    for name in MPII_JOINT_NAMES:
        assert m[f"PCKh@0.1/{name}"] == 1.0
    # 7441 annotated joints in the 500 people, 6457 of them outside pelvis and thorax.
    assert m["joints"] == 6457


def test_hand_computed_case():
    gt = np.zeros((2, 16, 2))
    gt[:] = np.arange(1, 17)[:, None] * np.array([10.0, 7.0])  # every joint somewhere
    gt[0, 9] = 0.0                                               # person 0: head top missing
    pred = gt.copy()
    pred[0, 0] += (3.0, 4.0)    # r_ankle 5 px off, normaliser 10: 0.5, correct at 0.5 only
    pred[0, 5] += (0.0, 6.0)    # l_ankle 0.6: wrong at both
    pred[0, 9] = (500.0, 500.0)  # not annotated: not counted whatever the prediction
    pred[1, 10] += (1.0, 0.0)   # r_wrist 1 px off, normaliser 20: 0.05, correct at both
    pred[1, 8] += (0.0, 3.0)    # upper_neck 0.15: correct at 0.5, wrong at 0.1
    pred[1, 6] += (50.0, 0.0)   # pelvis: wrong, but not in the Mean
    m = pckh(pred, gt, [10.0, 20.0])
    # Per joint, over the people where it is annotated.
    assert m["PCKh@0.5/r_ankle"] == 1.0 and m["PCKh@0.1/r_ankle"] == 0.5
    assert m["PCKh@0.5/l_ankle"] == 0.5 and m["PCKh@0.1/l_ankle"] == 0.5
    assert m["PCKh@0.5/head_top"] == 1.0 and m["PCKh@0.1/head_top"] == 1.0  # person 1 only
    assert m["PCKh@0.5/upper_neck"] == 1.0 and m["PCKh@0.1/upper_neck"] == 0.5
    assert m["PCKh@0.5/pelvis"] == 0.5
    # Groups: the mean of the two joints' values.
    assert m["PCKh@0.5/Ankle"] == 0.75 and m["PCKh@0.1/Ankle"] == 0.5
    assert m["PCKh@0.1/Head"] == 0.75
    assert m["PCKh@0.5/Wrist"] == 1.0
    # Mean: pooled over the 14 joints but pelvis and thorax: 13 + 14 = 27 counted; at 0.5 one
    # is wrong (l_ankle of person 0), at 0.1 three (both ankles of person 0, upper neck of 1).
    assert m["joints"] == 27
    assert m["PCKh@0.5"] == 26 / 27
    assert m["PCKh@0.1"] == 24 / 27


def test_jittered_predictions_match_an_independent_loop(valid):
    rng = np.random.default_rng(7)
    pred = valid.part + rng.normal(0.0, 0.35, valid.part.shape) * valid.normalize[:, None, None]
    m = pckh(pred, valid.part, valid.normalize, thresholds=(0.5, 0.2, 0.1))
    for t in (0.5, 0.2, 0.1):
        hits = [0] * 16
        counts = [0] * 16
        for i in range(len(valid)):
            for j in range(16):
                gx, gy = valid.part[i, j]
                if gx == 0 and gy == 0:
                    continue
                d = math.hypot(pred[i, j, 0] - gx, pred[i, j, 1] - gy) / valid.normalize[i]
                counts[j] += 1
                hits[j] += d <= t
        for j, name in enumerate(MPII_JOINT_NAMES):
            assert m[f"PCKh@{t:g}/{name}"] == hits[j] / counts[j], name
        for g, (a, b) in GROUPS.items():
            assert m[f"PCKh@{t:g}/{g}"] == pytest.approx((hits[a] / counts[a] + hits[b] / counts[b])
                                                         / 2, abs=1e-15)
        keep = [j for j in range(16) if j not in (6, 7)]
        assert m[f"PCKh@{t:g}"] == sum(hits[j] for j in keep) / sum(counts[j] for j in keep)
    assert 0.4 < m["PCKh@0.5"] < 0.95 and m["PCKh@0.1"] < m["PCKh@0.2"] < m["PCKh@0.5"]


def test_visible_only_counts_visible_joints(valid):
    pred = valid.part.copy()
    hidden = valid.annotated & (valid.visible == 0)
    pred[hidden] += 1e4  # every occluded joint wrong
    m = pckh(pred, valid.part, valid.normalize, thresholds=(0.5,), visible=valid.visible,
             visible_only=True)
    assert m["PCKh@0.5"] == 1.0
    keep = [j for j in range(16) if j not in (6, 7)]
    assert m["joints"] == int((valid.annotated & (valid.visible > 0))[:, keep].sum())
    everything = pckh(pred, valid.part, valid.normalize, thresholds=(0.5,))
    assert everything["PCKh@0.5"] == 1 - hidden[:, keep].sum() / everything["joints"]


def test_bad_inputs_are_named():
    gt = np.ones((2, 16, 2))
    with pytest.raises(ValueError, match=r"pred, gt: expected shape \(N, 16, 2\) each \(the MPII "
                                         r"joints\), got \(2, 17, 2\) and \(2, 17, 2\)"):
        pckh(np.ones((2, 17, 2)), np.ones((2, 17, 2)), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"normalize: row 1 has annotated joints but "
                                         r"normaliser -1.0 \(expected > 0\)"):
        pckh(gt, gt, [1.0, -1.0])
    with pytest.raises(ValueError, match=r"normalize: expected \(2,\) \(one per person\)"):
        pckh(gt, gt, [1.0])
    with pytest.raises(ValueError, match="thresholds: expected positive values"):
        pckh(gt, gt, [1.0, 1.0], thresholds=(0.5, 0.0))


def test_table_is_the_standard_layout():
    m = {"PCKh@0.5": 0.9123, "joints": 27}
    for i, g in enumerate(GROUPS):
        m[f"PCKh@0.5/{g}"] = 0.9 + i / 100
    assert pckh_table(m) == (
        "PCKh       Head Shoulder    Elbow    Wrist      Hip     Knee    Ankle     Mean\n"
        "@0.5       90.0     91.0     92.0     93.0     94.0     95.0     96.0     91.2\n"
        "(27 joints counted; Mean without pelvis and thorax)")
