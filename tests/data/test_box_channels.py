"""Box input channels of sgcls / predcls (docs/design.md §2 "Tasks"): the renderer against a
hand-computed case, the checks of user-given objects, and the dataset's channels moving with
the augmented image."""

from pathlib import Path

import numpy as np
import pytest

from aehg.config import load_config
from aehg.data.box_channels import box_channel_sigma, check_known_objects, render_box_channels
from aehg.data.loader import build_dataset
from aehg.data.transforms import AffineParams, transform_boxes

ROOT = Path(__file__).resolve().parents[2]


def _gauss(dx, dy, sigma=1.0):
    return np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def test_render_matches_a_hand_computed_case():
    # Box A: x 1.2..3.6 -> columns round(1.2)=1 .. round(3.6)=4, rows round(0.4)=0 ..
    # round(2.5)=3 (half up); centre (2.4, 1.45) -> pixel (2, 1). Box B leaves the 6x8 input:
    # clipped to x 5..7.5, y 5..5.5 -> columns 5..7 (8 clamped), row 5; centre (6.25, 5.25) ->
    # pixel (6, 5).
    boxes = np.array([[1.2, 0.4, 3.6, 2.5], [5.0, 5.0, 20.0, 20.0]])
    out = render_box_channels(boxes, (6, 8), sigma=1.0, labels=np.array([1, 0]), num_classes=2)
    assert out.shape == (4, 6, 8) and out.dtype == np.float32
    inside_a = np.zeros((6, 8))
    inside_a[0:4, 1:5] = 1
    inside_b = np.zeros((6, 8))
    inside_b[5, 5:8] = 1
    np.testing.assert_array_equal(out[0], np.maximum(inside_a, inside_b))
    np.testing.assert_array_equal(out[2], inside_b)  # class 0: box B
    np.testing.assert_array_equal(out[3], inside_a)  # class 1: box A
    ys, xs = np.mgrid[0:6, 0:8]
    # Patch radius ceil(3σ) + 1 = 4: nothing beyond 4 pixels (per axis) of a centre.
    def patch(cx, cy):
        near = (abs(xs - cx) <= 4) & (abs(ys - cy) <= 4)
        return np.where(near, _gauss(xs - cx, ys - cy), 0.0)

    want = np.maximum(patch(2, 1), patch(6, 5))
    assert want[0, 7] == 0  # 5 columns from A, 5 rows from B
    np.testing.assert_allclose(out[1], want, rtol=1e-6, atol=1e-7)
    assert out[1, 1, 2] == 1.0 and out[1, 5, 6] == 1.0


def test_render_equals_a_naive_loop_on_random_boxes():
    rng = np.random.default_rng(3)
    h, w, c, sigma = 21, 26, 5, 1.5
    xy = rng.uniform(-8, 30, (9, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 12, (9, 2))], axis=1)
    labels = rng.integers(0, c, 9)
    out = render_box_channels(boxes, (h, w), sigma=sigma, labels=labels, num_classes=c)
    want = np.zeros((2 + c, h, w))
    rad = int(np.ceil(3 * sigma)) + 1
    for (x1, y1, x2, y2), lab in zip(boxes, labels, strict=True):
        if x2 < -0.5 or y2 < -0.5 or x1 > w - 0.5 or y1 > h - 0.5:
            continue
        x1, x2 = np.clip([x1, x2], -0.5, w - 0.5)
        y1, y2 = np.clip([y1, y2], -0.5, h - 0.5)
        for y in range(h):
            for x in range(w):
                if np.floor(x1 + 0.5) <= x <= np.floor(x2 + 0.5) and \
                        np.floor(y1 + 0.5) <= y <= np.floor(y2 + 0.5):
                    want[0, y, x] = want[2 + lab, y, x] = 1
                cx, cy = np.floor((x1 + x2) / 2 + 0.5), np.floor((y1 + y2) / 2 + 0.5)
                if abs(x - cx) <= rad and abs(y - cy) <= rad:
                    want[1, y, x] = max(want[1, y, x], _gauss(x - cx, y - cy, sigma))
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)


def test_render_sgcls_has_two_channels_and_drops_boxes_wholly_outside():
    out = render_box_channels(np.array([[-9.0, -9.0, -1.0, -1.0], [2.0, 2.0, 2.0, 2.0]]),
                              (5, 5), sigma=0.5)
    assert out.shape == (2, 5, 5)
    # The outside box draws nothing; the point box is its one pixel and its peak.
    assert out[0].sum() == 1 and out[0, 2, 2] == 1
    ys, xs = np.mgrid[0:5, 0:5]  # all within the radius ceil(1.5) + 1 = 3 of (2, 2)
    np.testing.assert_allclose(out[1], _gauss(xs - 2, ys - 2, 0.5), rtol=1e-6)
    with pytest.raises(ValueError, match=r"labels\[1\]: expected a class in 0..2, got 3"):
        render_box_channels(np.zeros((2, 4)), (5, 5), sigma=1, labels=np.array([0, 3]),
                            num_classes=3)
    with pytest.raises(ValueError, match="labels: the class masks"):
        render_box_channels(np.zeros((2, 4)), (5, 5), sigma=1, num_classes=3)


def test_check_known_objects_errors_name_the_argument():
    ok = [[0, 0, 10, 10], [5, 5, 20, 8]]
    b, lab = check_known_objects(ok, [1, 2], (10, 20), "predcls", 4)
    assert b.shape == (2, 4) and lab.tolist() == [1, 2]
    assert check_known_objects(ok, None, (10, 20), "sgcls", 4)[1] is None
    assert check_known_objects(None, None, (10, 20), "sgdet", 4) == (None, None)
    cases = [
        ([[0, 0, 10, 10], [5, 5, 21, 8]], [0, 0], "predcls",
         r"boxes\[1\]: expected a box inside the image \(0 <= x <= 20, 0 <= y <= 10\); the box "
         r"lies outside the image"),
        ([[-1, 0, 10, 10]], [0], "sgcls", r"boxes\[0\]: .*outside the image"),
        ([], [], "predcls", "boxes: expected at least one box"),
        (None, None, "sgcls", "boxes: the model's data.task is 'sgcls': give the known objects"),
        (ok, None, "predcls", "labels: the model's data.task is 'predcls'"),
        (ok, [0, 4], "predcls", r"labels\[1\]: expected a class in 0..3 \(model.num_classes 4\), "
                                r"got 4"),
        (ok, [0], "predcls", "labels: expected 2 integer classes"),
        ([[5, 0, 1, 10]], None, "sgcls", r"boxes\[0\]: expected x1 <= x2"),
        (ok, None, "sgdet", "boxes: the model's data.task is 'sgdet' \\(no box input channels"),
    ]
    for boxes, labels, task, msg in cases:
        with pytest.raises(ValueError, match=msg):
            check_known_objects(boxes, labels, (10, 20), task, 4)


@pytest.fixture(scope="module")
def graph_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph_data")
    return load_config(ROOT / "configs" / "demo_graph.yaml", [
        f"data.root={root}", "data.synthetic.num_train=8", "data.synthetic.num_val=2",
        "data.task=predcls"])


def test_dataset_renders_the_boxes_after_augmentation(graph_cfg):
    ds = build_dataset(graph_cfg, "train")
    c = graph_cfg.model.num_classes
    img_id = ds.ids[0]
    params = AffineParams(rotation=0.0, scale=1.15, shift=(0.08, -0.05), flip=True)
    sample = ds.get(0, params)
    x, meta = sample["image"], sample["meta"]
    assert x.shape == (3 + 2 + c, 128, 128)
    np.testing.assert_array_equal(meta["known_boxes"], ds.boxes(img_id))
    moved = transform_boxes(ds.boxes(img_id), meta["input_transform"])
    # Independent of the renderer: every centre peak sits at a warped box's rounded centre
    # (clipped to the input), and each warped box's class mask covers its rounded centre.
    clipped = np.clip(moved, -0.5, 127.5)
    cx = np.floor((clipped[:, 0] + clipped[:, 2]) / 2 + 0.5).astype(int)
    cy = np.floor((clipped[:, 1] + clipped[:, 3]) / 2 + 0.5).astype(int)
    peaks = {(int(y), int(xx)) for y, xx in zip(*np.nonzero(x[4].numpy() == 1.0), strict=True)}
    assert peaks == set(zip(cy.tolist(), cx.tolist(), strict=True))
    labels = ds.labels(img_id)
    assert (x[5 + labels, cy, cx] == 1).all() and (x[3, cy, cx] == 1).all()
    # Not where the unaugmented boxes would put them (the flip moved them).
    still = transform_boxes(ds.boxes(img_id), ds.eval_sample(0)["meta"]["input_transform"])
    assert not np.allclose(moved, still)
    # Evaluation renders the same way with the validation transform.
    ev = ds.eval_sample(0)
    assert ev["image"].shape == x.shape
    assert ds.box_sigma == box_channel_sigma(graph_cfg.data.sigma, 128, 32) == 4.0


def test_sgdet_dataset_keeps_three_channels(graph_cfg):
    import dataclasses

    cfg = dataclasses.replace(graph_cfg, data=dataclasses.replace(graph_cfg.data, task="sgdet"))
    ds = build_dataset(cfg, "val")
    s = ds.eval_sample(0)
    assert s["image"].shape[0] == 3 and "known_boxes" not in s["meta"]
