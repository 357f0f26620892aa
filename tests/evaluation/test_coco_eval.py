"""COCO evaluation wrapper on the real COCO sample (tests/data/coco_kp_ccby)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from aehg.evaluation.coco import (
    KEYPOINT_STAT_NAMES,
    boxes_to_results,
    evaluate,
    keypoints_to_results,
    load_coco,
)
from aehg.keypoints import COCO_OKS_SIGMAS

ANN = Path(__file__).resolve().parents[1] / "data" / "coco_kp_ccby" / "person_keypoints_ccby.json"


@pytest.fixture(scope="module")
def coco():
    return load_coco(ANN)


def _gt_people(coco):
    """(image_id, keypoints (C, 3)) of every evaluated person: not crowd, ≥ 1 keypoint."""
    out = []
    for ann in coco.dataset["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) == 0:
            continue
        out.append((ann["image_id"], np.asarray(ann["keypoints"], float).reshape(-1, 3)))
    return out


def _results_from_gt(coco, shift=0.0):
    results = []
    for image_id, kp in _gt_people(coco):
        kp = kp.copy()
        kp[:, :2] += shift
        kp[:, 2] = 1.0  # the third number of a result is a score, not a visibility flag
        results += keypoints_to_results(kp[None], np.array([1.0]), image_id)
    return results


def test_ground_truth_as_predictions_scores_one(coco, tmp_path, capsys):
    results = _results_from_gt(coco)
    assert len(results) == 44  # the people with keypoints in the sample
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    stats = evaluate(ANN, path)  # both from files: the full JSON → COCOeval path
    assert list(stats) == list(KEYPOINT_STAT_NAMES)
    for name in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"):
        assert stats[name] == pytest.approx(1.0), name
    for name in ("APm", "APl", "ARm", "ARl"):  # both sizes occur in the sample
        assert stats[name] == pytest.approx(1.0), name
    assert "Average Precision" in capsys.readouterr().out  # the standard table is printed


def test_dropping_people_lowers_recall_by_their_share(coco):
    results = _results_from_gt(coco)
    kept = results[::2]
    stats = evaluate(coco, kept, verbose=False)
    # Every kept detection is exact (OKS 1) so recall is the kept share at every threshold.
    assert stats["AR"] == pytest.approx(len(kept) / len(results))
    assert stats["AP"] < 1.0


def test_shifted_keypoints_score_lower_and_sigmas_matter(coco):
    shifted = _results_from_gt(coco, shift=3.0)
    base = evaluate(coco, shifted, verbose=False)["AP"]
    assert base < 1.0
    wide = evaluate(coco, shifted, sigmas=np.asarray(COCO_OKS_SIGMAS) * 4,
                    verbose=False)["AP"]
    assert wide > base


def test_other_keypoint_set_with_its_own_sigmas(coco):
    # Keep the first 5 keypoints (face) of every person: a 5-keypoint category.
    ds = copy.deepcopy(coco.dataset)
    ds["categories"][0]["keypoints"] = ds["categories"][0]["keypoints"][:5]
    ds["categories"][0]["skeleton"] = []
    for ann in ds["annotations"]:
        kp = np.asarray(ann["keypoints"]).reshape(-1, 3)[:5]
        ann["keypoints"] = kp.reshape(-1).tolist()
        ann["num_keypoints"] = int((kp[:, 2] > 0).sum())
    results = []
    for ann in ds["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        kp = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        results += keypoints_to_results(kp[None], [1.0], ann["image_id"])
    stats = evaluate(ds, results, sigmas=COCO_OKS_SIGMAS[:5], verbose=False)
    assert stats["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigmas: the ground truth has 5 keypoints"):
        evaluate(ds, results, verbose=False)
    with pytest.raises(ValueError, match="sigmas: expected 5 values"):
        evaluate(ds, results, sigmas=COCO_OKS_SIGMAS, verbose=False)


def test_bbox_evaluation_from_ground_truth_boxes(coco):
    results = []
    for ann in coco.dataset["annotations"]:
        if ann["iscrowd"]:
            continue
        x, y, w, h = ann["bbox"]
        results += boxes_to_results(np.array([[x, y, x + w, y + h]]), [1.0], [0],
                                    ann["image_id"], label_to_category=[1])
    stats = evaluate(coco, results, iou_type="bbox", verbose=False)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR"] == stats["AR100"] == pytest.approx(1.0)


def test_image_subset(coco):
    results = _results_from_gt(coco)
    first = results[0]["image_id"]
    only_first = [r for r in results if r["image_id"] == first]
    # Evaluated over the whole set, the other images' people are all missed…
    assert evaluate(coco, only_first, verbose=False)["AR"] < 0.5
    # …but restricted to the image the results cover, it is perfect.
    assert evaluate(coco, only_first, image_ids=[first], verbose=False)["AP"] == \
        pytest.approx(1.0)


def test_empty_results_give_zeros(coco):
    stats = evaluate(coco, [], verbose=False)
    assert stats == dict.fromkeys(KEYPOINT_STAT_NAMES, 0.0)


def test_bad_results_errors(coco, tmp_path):
    good = _results_from_gt(coco)[:1]
    with pytest.raises(ValueError, match=r"results\[0\]: image_id 123456789"):
        evaluate(coco, [dict(good[0], image_id=123456789)], verbose=False)
    with pytest.raises(ValueError, match=r"results\[0\]: keypoints: expected 51"):
        evaluate(coco, [dict(good[0], keypoints=[0.0] * 6)], verbose=False)
    with pytest.raises(ValueError, match=r"results\[0\]: missing key\(s\) score"):
        evaluate(coco, [{k: v for k, v in good[0].items() if k != "score"}], verbose=False)
    with pytest.raises(FileNotFoundError, match="results file not found"):
        evaluate(coco, tmp_path / "nope.json", verbose=False)
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found"):
        evaluate(tmp_path / "nope.json", good, verbose=False)
    with pytest.raises(ValueError, match="iou_type"):
        evaluate(coco, good, iou_type="segm", verbose=False)
    with pytest.raises(ValueError, match=r"scores: expected 2 entries"):
        keypoints_to_results(np.zeros((2, 17, 3)), [1.0], 1)


def test_ground_truth_through_val_transform_and_back_scores_one(tmp_path):
    from aehg.data import CocoKeypointDataset, apply_affine, invert_affine

    ds = CocoKeypointDataset(ANN, ANN.parent / "images", train=False, input_size=512,
                             output_size=128)
    results = []
    for i in range(len(ds)):
        meta = ds[i]["meta"]
        kp = np.asarray(meta["keypoints"], np.float64)  # output-map pixels, visibility flag
        if not len(kp):
            continue
        back = np.concatenate([apply_affine(kp[..., :2], invert_affine(meta["transform"])),
                               (kp[..., 2:] > 0).astype(float)], -1)
        orig = ds.keypoints(meta["image_id"])
        vis = orig[..., 2] > 0
        np.testing.assert_allclose(back[vis][:, :2], orig[vis][:, :2], atol=1e-3)
        results += keypoints_to_results(back, np.ones(len(kp)), meta["image_id"])
    assert len(results) == 44
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    stats = evaluate(ANN, path, sigmas=ds.oks_sigmas, verbose=False)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR"] == pytest.approx(1.0)


def test_absent_keypoints_go_to_the_centroid_or_the_origin():
    kp = np.array([[[10.0, 20.0, 0.9], [30.0, 60.0, 0.5], [99.0, 99.0, 0.0]],
                   [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    centroid = keypoints_to_results(kp, [0.8, 0.1], image_id=7)
    assert centroid[0]["keypoints"] == [10.0, 20.0, 0.9, 30.0, 60.0, 0.5, 20.0, 40.0, 0.0]
    assert centroid[1]["keypoints"] == [0.0] * 9  # no part detected: nothing to centre on
    zero = keypoints_to_results(kp, [0.8, 0.1], image_id=7, missing="zero")
    assert zero[0]["keypoints"] == [10.0, 20.0, 0.9, 30.0, 60.0, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"missing: expected one of \('centroid', 'zero'\)"):
        keypoints_to_results(kp, [0.8, 0.1], image_id=7, missing="mean")
