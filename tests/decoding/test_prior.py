"""aehg.decoding.PosePrior: the shipped COCO prior is reproducible from its data, fitting,
the flat prior, JSON files and the errors that name what is wrong."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aehg.decoding import PosePrior, group

CCBY = Path(__file__).parents[1] / "data" / "coco_kp_ccby" / "person_keypoints_ccby.json"


def test_shipped_coco_prior_is_the_fit_on_coco_kp_ccby():
    fitted = PosePrior.from_coco(CCBY)
    shipped = PosePrior.coco()
    assert shipped.num_parts == fitted.num_parts == 17
    np.testing.assert_allclose(shipped.mean, fitted.mean, atol=5e-4)
    np.testing.assert_allclose(shipped.std, fitted.std, atol=5e-4)
    # A few values by hand: eyes are close (log 0.11 scale), ankles far from the nose.
    assert shipped.mean[1, 2] == pytest.approx(-2.21, abs=0.01)
    assert shipped.mean[0, 15] == pytest.approx(0.50, abs=0.01)
    assert shipped.std[15, 0] == pytest.approx(0.2)  # floored at MIN_STD


def test_fit_by_hand():
    # Two people, 3 parts; scale 10 and 20. Part 2 is unlabelled in the second person.
    kp = np.array([[[0, 0, 2], [3, 4, 2], [0, 8, 2]],
                   [[0, 0, 2], [12, 16, 2], [5, 5, 0]]], np.float64)
    prior = PosePrior.fit(kp, np.array([10.0, 20.0]), min_std=0.01, min_count=2)
    # Pair (0, 1): distances 5/10 and 20/20 → log 0.5 and log 1.
    assert prior.mean[0, 1] == pytest.approx((math.log(0.5) + 0.0) / 2)
    assert prior.std[0, 1] == pytest.approx(math.sqrt(2 * (math.log(0.5) / 2) ** 2))
    # Pairs with part 2 were seen once: the mean of the fitted pairs, the flat deviation.
    assert prior.mean[0, 2] == pytest.approx(prior.mean[0, 1])
    assert prior.std[1, 2] == pytest.approx(0.7)
    np.testing.assert_array_equal(prior.mean, prior.mean.T)
    assert prior.mean[1, 1] == 0.0 and prior.std[1, 1] == 1.0


def test_flat_prior_and_files(tmp_path):
    flat = PosePrior.flat(4, std=0.5)
    np.testing.assert_array_equal(flat.mean, np.zeros((4, 4)))
    np.testing.assert_array_equal(flat.std, np.where(np.eye(4, dtype=bool), 1.0, 0.5))
    path = flat.save(tmp_path / "prior.json")
    assert json.loads(path.read_text())["format"] == "aehg.PosePrior/1"
    back = PosePrior.load(path)
    np.testing.assert_array_equal(back.mean, flat.mean)
    np.testing.assert_array_equal(back.std, flat.std)
    coco = PosePrior.coco()
    again = PosePrior.load(coco.save(tmp_path / "coco.json"))
    np.testing.assert_array_equal(again.mean, coco.mean)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    # A prior passed to group is the one used. Parts 0 and 1 are 4 px apart, part 2 is 16 and
    # 12 px from them (same tag): S is 1.6 under a deviation of 0.7 (one person) and 19.5
    # under 0.2 (beyond SPATIAL_GATE: part 2 is someone else).
    heat = np.zeros((3, 32, 32), np.float32)
    heat[0, 8, 4] = heat[1, 8, 8] = heat[2, 8, 20] = 1.0
    tags = np.zeros((3, 32, 32))
    loose = group(heat, tags, pose_prior=PosePrior.flat(3, 0.7), refine=False)
    tight = group(heat, tags, pose_prior=PosePrior.flat(3, 0.2), refine=False)
    assert (loose.keypoints[:, :, 2] > 0).sum(1).tolist() == [3]
    assert sorted((tight.keypoints[:, :, 2] > 0).sum(1).tolist()) == [1, 2]


@pytest.mark.parametrize("data,match", [
    ({"format": "other"}, r"prior.json: format: expected 'aehg.PosePrior/1', got 'other'"),
    ({"format": "aehg.PosePrior/1", "mean": [[0.0]]}, r"prior.json: std: missing"),
    ({"format": "aehg.PosePrior/1", "mean": [[0, 1], [2, 0]], "std": [[1, 1], [1, 1]]},
     r"prior.json: PosePrior: expected symmetric mean and std"),
    ({"format": "aehg.PosePrior/1", "mean": [[0, 0], [0, 0]], "std": [[1, 0], [0, 1]]},
     r"prior.json: PosePrior.std: expected values > 0 off the diagonal"),
    ([1, 2], r"prior.json: format: expected 'aehg.PosePrior/1', got 'list'"),
])
def test_bad_prior_files_name_the_file_and_key(tmp_path, data, match):
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        PosePrior.load(path)


def test_fit_errors_name_the_thing(tmp_path):
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(N, C, 3\), got \(2, 3\)"):
        PosePrior.fit(np.zeros((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match=r"scales: expected 2 values \(one per person\), got 3"):
        PosePrior.fit(np.zeros((2, 3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="scales: expected finite values > 0"):
        PosePrior.fit(np.zeros((2, 3, 3)), np.array([1.0, 0.0]))
    bad = {"annotations": [{"id": 7, "num_keypoints": 1, "keypoints": [1, 2], "area": 4.0}]}
    with pytest.raises(ValueError, match=r"annotations: annotation 7: expected 'keypoints'"):
        PosePrior.from_coco(bad)
    path = tmp_path / "kp.json"
    path.write_text(json.dumps({"annotations": [{"id": 3, "num_keypoints": 1,
                                                 "keypoints": [1, 2, 2], "area": 0}]}))
    with pytest.raises(ValueError, match=f"{path}: no non-crowd person with keypoints"):
        PosePrior.from_coco(path)
    with pytest.raises(ValueError, match="num_parts: expected an integer >= 1, got 0"):
        PosePrior.flat(0)


def test_group_checks_the_prior_size():
    with pytest.raises(ValueError, match=r"pose_prior: expected a prior of C = 3 parts \(the "
                                         r"heatmaps' classes\), got 17"):
        group(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), pose_prior=PosePrior.coco())
