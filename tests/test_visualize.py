"""Drawing: skeletons per person, labelled boxes, relation-graph arrows, PNG/JPEG writing."""

from __future__ import annotations

import cv2
import networkx as nx
import numpy as np
import pytest

from aehg.visualize import color_for, draw_boxes, draw_graph, draw_people, save_image


def _tinted(pixel, color):
    """The pixel is ``color`` blended onto black (anti-aliased edges), at least half strength."""
    p, c = np.asarray(pixel, float), np.asarray(color, float)
    alpha = p @ c / (c @ c)
    return alpha > 0.5 and np.abs(p - alpha * c).max() < 12


def _blank(h=240, w=320):
    return np.zeros((h, w, 3), np.uint8)


def _person(x0, y0):
    """7 parts of a stick figure (custom keypoint set), all visible."""
    pts = np.array([[0, 0], [0, 20], [-15, 25], [15, 25], [0, 50], [-10, 80], [10, 80]], float)
    kp = np.zeros((7, 3))
    kp[:, :2] = pts + [x0, y0]
    kp[:, 2] = 0.9
    return kp


SKELETON = [(0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6)]


def test_people_get_their_own_colours_and_skeleton_lines():
    img = _blank()
    kp = np.stack([_person(80, 40), _person(230, 40)])
    out = draw_people(img, kp, skeleton=SKELETON)
    assert out is not img and not img.any()  # drew on a copy
    # The midpoint of limb (1, 4) of each person has that person's colour.
    for i in range(2):
        mid = ((kp[i, 1, :2] + kp[i, 4, :2]) / 2).round().astype(int)
        assert _tinted(out[mid[1], mid[0]], color_for(i))
        assert not _tinted(out[mid[1], mid[0]], color_for(1 - i))
    assert color_for(0) != color_for(1)
    # Nothing drawn far from both people.
    assert not out[200:, :].any()


def test_low_score_parts_and_their_limbs_are_not_drawn():
    kp = _person(160, 40)[None]
    kp[0, 4, 2] = 0.05  # hip below threshold: limbs (1,4), (4,5), (4,6) vanish
    out = draw_people(_blank(), kp, skeleton=SKELETON, score_threshold=0.1)
    mid = ((kp[0, 1, :2] + kp[0, 4, :2]) / 2).round().astype(int)
    assert not out[mid[1], mid[0]].any()
    hip = kp[0, 4, :2].round().astype(int)
    assert not out[hip[1], hip[0]].any()
    assert out[int(kp[0, 0, 1]), int(kp[0, 0, 0])].any()  # the head still is


def test_coco_skeleton_is_the_default_for_17_parts():
    kp = np.zeros((1, 17, 3))
    kp[0, :, 2] = 1.0
    kp[0, :, 0] = np.linspace(20, 300, 17)
    kp[0, :, 1] = 120
    kp[0, 5, 1] = kp[0, 6, 1] = 60  # shoulders raised: limb 5-6 is a horizontal line at y=60
    out = draw_people(_blank(), kp)
    mid_x = int(round((kp[0, 5, 0] + kp[0, 6, 0]) / 2))
    assert _tinted(out[60, mid_x], color_for(0))
    with pytest.raises(ValueError, match=r"skeleton: part indices must lie in \[0, 17\)"):
        draw_people(_blank(), kp, skeleton=[(0, 17)])


def test_boxes_with_labels():
    out = draw_boxes(_blank(), [[50, 60, 150, 200]], labels=[2], scores=[0.87],
                     class_names=["person", "horse", "hat"])
    assert _tinted(out[130, 50], color_for(2))  # left edge in the class colour
    assert not out[130, 100].any()  # inside stays empty
    assert out[40:60, 50:110].any()  # caption above the top-left corner


def test_graph_arrows_between_node_centres():
    g = nx.MultiDiGraph()
    g.add_node(0, label=0, score=0.9, box=np.array([10.0, 100, 50, 140]))
    g.add_node(1, label=1, score=0.8, box=np.array([250.0, 100, 290, 140]))
    g.add_edge(0, 1, label=1, score=0.7)
    out = draw_graph(_blank(), g, ["person", "horse"], ["riding", "wearing"])
    # The arrow runs along y = 120 between the centres (30 → 270); sample away from the caption.
    assert _tinted(out[120, 80], color_for(1001))
    assert _tinted(out[120, 220], color_for(1001))
    plain = draw_boxes(_blank(), [[10, 100, 50, 140], [250, 100, 290, 140]], [0, 1], [0.9, 0.8],
                       ["person", "horse"])
    assert not plain[120, 80].any()
    # Nodes with only a centre (objects without boxes) still get their arrows.
    c = nx.MultiDiGraph()
    c.add_node(0, label=0, score=0.9, x=30.0, y=120.0)
    c.add_node(1, label=1, score=0.8, x=270.0, y=120.0)
    c.add_edge(0, 1, label=1, score=0.7)
    dots = draw_graph(_blank(480, 640), c, ["person", "horse"], ["riding", "wearing"])
    assert _tinted(dots[120, 80], color_for(1001))
    assert _tinted(dots[123, 28], color_for(0))  # the dot, below-left of the arrow and caption
    # Pose nodes (keypoints only) are drawn as skeletons.
    p = nx.MultiDiGraph()
    p.add_node(0, label=0, score=0.9, keypoints=_person(160, 40))
    assert draw_graph(_blank(), p, skeleton=SKELETON)[60, 160].any()


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_save_image_round_trip(tmp_path, ext):
    img = draw_boxes(_blank(), [[50, 60, 150, 200]], labels=[0])
    path = save_image(tmp_path / f"sub/out{ext}", img)
    back = cv2.imread(str(path))
    assert back.shape == img.shape
    if ext == ".png":
        np.testing.assert_array_equal(back, img)
    else:
        assert np.abs(back.astype(int) - img).mean() < 3


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"expected a \.png, \.jpg or \.jpeg"):
        save_image("out.bmp", _blank())
    with pytest.raises(ValueError, match="image: expected a uint8 BGR array"):
        draw_boxes(np.zeros((10, 10, 3), np.float32), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(N, C, 3\)"):
        draw_people(_blank(), np.zeros((2, 17)))
