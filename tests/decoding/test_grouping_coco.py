"""Ground-truth maps rendered from real COCO keypoint annotations, grouped with aehg.group,
mapped back to the image and scored with pycocotools: keypoint AP must be >= 0.95."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from aehg import group
from aehg.decoding import METHODS

DATA = Path(__file__).parents[1] / "data" / "coco_kp_ccby" / "person_keypoints_ccby.json"
INPUT, STRIDE, SIGMA = 512, 4, 2.0
OUT = INPUT // STRIDE


def image_to_heatmap(width: int, height: int) -> np.ndarray:
    """2×3 affine: long side scaled to 512, stride 4, pixel centres (p + 0.5) / 4 - 0.5."""
    s = INPUT / max(width, height) / STRIDE
    off = 0.5 / STRIDE - 0.5
    return np.array([[s, 0.0, off], [0.0, s, off]])


def render(anns: list[dict], transform: np.ndarray, rng: np.random.Generator | None = None,
           tag_noise: float = 0.0, heat_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Max-combined Gaussians at the exact sub-pixel keypoints and dense per-person tags
    (tag = person index, E = 1).

    Near a keypoint (Gaussian > 1e-3) the tag is that of the person whose Gaussian is highest;
    elsewhere, in every channel, it is that of the person with the nearest visible keypoint, as
    a network's tag map covers each person's region. (With tags only at the Gaussians, a person
    missing a part everywhere has no pixel with its own tag in that channel, and refinement
    would copy a neighbour's part, one tag unit away.) With ``rng``: each person's part gets
    Gaussian tag noise of std ``tag_noise`` (one draw for its blob, another for the rest of its
    region in that channel), and every pixel heatmap noise of std ``heat_noise``, clipped at 0,
    as in benchmarks/bench_oracle.py.
    """
    n = len(anns)
    joint = back = np.zeros((n, 17))
    if rng is not None:
        joint, back = tag_noise * rng.standard_normal((2, n, 17))
    yy, xx = np.mgrid[0:OUT, 0:OUT]
    heat = np.zeros((17, OUT, OUT), np.float32)
    tags = np.zeros((17, OUT, OUT), np.float32)
    nearest = np.full((OUT, OUT), np.inf)
    region = np.zeros((OUT, OUT), np.float32)
    for person, ann in enumerate(anns):
        kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        xy = kp[:, :2] @ transform[:, :2].T + transform[:, 2]
        visible = np.flatnonzero(kp[:, 2] > 0)
        d2 = ((xx[None] - xy[visible, 0, None, None]) ** 2
              + (yy[None] - xy[visible, 1, None, None]) ** 2).min(0)
        closer = d2 < nearest
        nearest[closer] = d2[closer]
        region[closer] = person
        for j in visible:
            g = np.exp(-((xx - xy[j, 0]) ** 2 + (yy - xy[j, 1]) ** 2) / (2 * SIGMA ** 2))
            owner = g > heat[j]
            heat[j][owner] = g[owner]
            tags[j][owner] = person + joint[person, j]
    owner = region.astype(np.int64)
    tags = np.where(heat > 1e-3, tags, owner[None] + back[owner].transpose(2, 0, 1))
    if rng is not None and heat_noise > 0:
        heat = np.maximum(heat + heat_noise * rng.standard_normal(heat.shape), 0.0)
    return heat.astype(np.float32), tags.astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("refine", [True, False])
def test_coco_keypoint_ap_from_ground_truth_maps(refine, method):
    dataset = json.loads(DATA.read_text())
    gt = COCO()
    gt.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    results = []
    for img in dataset["images"]:
        anns = [a for a in gt.imgToAnns[img["id"]]
                if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
        m = image_to_heatmap(img["width"], img["height"])
        heat, tags = render(anns, m)
        people = group(heat, tags, refine=refine, method=method).to_image(m)
        assert len(people) == len(anns)
        for kp, score in zip(people.keypoints, people.scores, strict=True):
            results.append({"image_id": img["id"], "category_id": 1,
                            "keypoints": kp.astype(np.float64).reshape(-1).tolist(),
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap = ev.stats[0]
    assert ap >= 0.95, f"keypoint AP {ap:.4f}"


def test_noisy_maps_layout_beats_greedy():
    # Tag noise 0.3 per part (people's tags 1 apart) and heatmap noise 0.025, fixed draws: the
    # regime of benchmarks/bench_oracle.py, where the greedy method loses most (0.680 here)
    # and the layout method keeps 0.867.
    dataset = json.loads(DATA.read_text())
    gt = COCO()
    gt.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    rng = np.random.default_rng(0)
    results: dict[str, list] = {method: [] for method in METHODS}
    for img in dataset["images"]:
        anns = [a for a in gt.imgToAnns[img["id"]]
                if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
        m = image_to_heatmap(img["width"], img["height"])
        heat, tags = render(anns, m, rng, tag_noise=0.3, heat_noise=0.025)
        for method in METHODS:
            people = group(heat, tags, method=method).to_image(m)
            results[method] += [{"image_id": img["id"], "category_id": 1,
                                 "keypoints": kp.astype(np.float64).reshape(-1).tolist(),
                                 "score": float(score)}
                                for kp, score in zip(people.keypoints, people.scores,
                                                     strict=True)]
    ap = {}
    for method, res in results.items():
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(res), iouType="keypoints")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ap[method] = ev.stats[0]
    assert ap["layout"] >= 0.85 and ap["greedy"] <= ap["layout"] - 0.15, ap
