"""Drawing: skeletons per person, labelled boxes, relation-graph arrows, legends, readable
drawings of small pictures, overview sheets, PNG/JPEG writing."""

from __future__ import annotations

import cv2
import networkx as nx
import numpy as np
import pytest

from aehg.visualize import (
    MIN_DRAWING_SIDE,
    LegendEntry,
    color_for,
    draw_boxes,
    draw_graph,
    draw_legend,
    draw_people,
    legend_entries,
    overview_band,
    overview_sheet,
    part_color,
    predicate_color,
    render_prediction,
    save_image,
)


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
    assert _tinted(out[120, 80], predicate_color(1))
    assert _tinted(out[120, 220], predicate_color(1))
    plain = draw_boxes(_blank(), [[10, 100, 50, 140], [250, 100, 290, 140]], [0, 1], [0.9, 0.8],
                       ["person", "horse"])
    assert not plain[120, 80].any()
    # Nodes with only a centre (objects without boxes) still get their arrows.
    c = nx.MultiDiGraph()
    c.add_node(0, label=0, score=0.9, x=30.0, y=120.0)
    c.add_node(1, label=1, score=0.8, x=270.0, y=120.0)
    c.add_edge(0, 1, label=1, score=0.7)
    dots = draw_graph(_blank(480, 640), c, ["person", "horse"], ["riding", "wearing"])
    assert _tinted(dots[120, 80], predicate_color(1))
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


# --------------------------------------------------------------------------- readable drawings

NAMES = ["head", "neck", "l_hand", "r_hand", "pelvis", "l_foot", "r_foot"]


def _has(region, color):
    """Some pixel of ``region`` has exactly ``color``."""
    return bool(np.all(region == np.asarray(color, np.uint8), axis=-1).any())


def _count(region, color):
    return int(np.all(region == np.asarray(color, np.uint8), axis=-1).sum())


def _pose_graph():
    g = nx.MultiDiGraph(height=128, width=128)
    kp = _person(60, 20)
    kp[6, 2] = 0.05  # right foot below the threshold: neither drawn nor in the legend
    g.add_node(0, label=0, score=0.9, keypoints=kp)
    return g, kp


def test_small_picture_is_enlarged_and_coordinates_follow():
    g, kp = _pose_graph()
    out = render_prediction(_blank(128, 128), g, NAMES, skeleton=SKELETON)
    assert out.shape[0] == MIN_DRAWING_SIDE == 512
    assert out.shape[1] > 512  # the legend panel on the right
    # Each visible part's marker is centred where the part lands on the 4x picture (pixel
    # centres: x' = (x + 0.5) * 4 - 0.5).
    for p in range(6):
        x, y = ((kp[p, :2] + 0.5) * 4 - 0.5).round().astype(int)
        assert tuple(out[y, x]) == part_color(p), p
    # Line widths and markers grow with the picture: the neck marker spans > 8 px.
    x, y = ((kp[1, :2] + 0.5) * 4 - 0.5).round().astype(int)
    assert _count(out[y - 12:y + 13, x - 12:x + 13], part_color(1)) > 8 * 8
    # A picture already large enough keeps its size (plus the panel).
    big = render_prediction(_blank(600, 520), g, NAMES, skeleton=SKELETON)
    assert big.shape[0] == 600 and big.shape[1] > 520
    assert render_prediction(_blank(128, 128), g, NAMES, legend=False).shape == (512, 512, 3)


def test_legend_shows_the_colours_used():
    g, _ = _pose_graph()
    out = render_prediction(_blank(128, 128), g, NAMES, skeleton=SKELETON)
    panel = out[:, 512:]
    for p in range(6):
        assert _has(panel, part_color(p)), NAMES[p]
    assert not _has(panel, part_color(6))  # the part not drawn is not listed
    assert [e.name for e in legend_entries(g, NAMES)] == NAMES[:6]
    # Relations: the classes and predicates of this picture only.
    r = nx.MultiDiGraph(height=128, width=128)
    r.add_node(0, label=0, score=0.9, box=np.array([10.0, 10, 40, 40]))
    r.add_node(1, label=2, score=0.8, box=np.array([80.0, 70, 120, 110]))
    r.add_edge(0, 1, label=1, score=0.7)
    classes, predicates = ["cat", "dog", "hat"], ["on", "near"]
    entries = legend_entries(r, classes, predicates)
    assert entries == [LegendEntry("class", 0, "cat"), LegendEntry("class", 2, "hat"),
                       LegendEntry("predicate", 1, "near")]
    out = render_prediction(_blank(128, 128), r, classes, predicates)
    panel = out[:, 512:]
    assert _has(panel, color_for(0)) and _has(panel, color_for(2))
    assert not _has(panel, color_for(1))
    assert any(_tinted(px, predicate_color(1)) for px in panel.reshape(-1, 3)[::1])
    # The arrow in the picture has the predicate's colour (centre (25, 25) -> (100, 90), x4).
    mid = ((np.array([62.5, 57.5]) + 0.5) * 4 - 0.5).round().astype(int)
    assert _tinted(out[mid[1], mid[0]], predicate_color(1))
    # Predicate r and class r do not share a colour.
    assert all(predicate_color(i) != color_for(i) for i in range(10))


def test_legend_panel_that_overflows_and_an_empty_one():
    entries = [LegendEntry("class", i, f"class{i}") for i in range(40)]
    out = draw_legend(_blank(128, 128), entries)
    assert out.shape[0] == 128 and out.shape[1] > 128
    assert _has(out[:, 128:], color_for(0)) and not _has(out[:, 128:], color_for(39))
    empty = draw_legend(_blank(128, 128), [])
    assert empty.shape[1] > 128 and empty[:, 128:].max() > 150  # "nothing detected"
    assert draw_legend(_blank(128, 128), entries[:2], width=300).shape == (128, 428, 3)


def test_line_width_scales_with_the_picture():
    def edge_width(side):
        k = side / 512
        out = draw_boxes(_blank(side, side), [[100 * k, 200 * k, 300 * k, 400 * k]], labels=[3])
        row = out[int(300 * k), : int(200 * k)]  # across the left edge, below the caption
        return sum(_tinted(px, color_for(3)) for px in row)

    small, large = edge_width(512), edge_width(2048)
    assert small >= 2 and large >= 2.5 * small  # 2 and 8 px lines, plus anti-aliasing


def test_crowded_captions_do_not_cover_each_other():
    a = [[20, 60, 220, 200]]
    alone = draw_boxes(_blank(), a, labels=[0], class_names=["aaaa", "bbbb"])
    both = draw_boxes(_blank(), a + [[20, 60, 30, 70]], labels=[0, 1],
                      class_names=["aaaa", "bbbb"])
    n_alone = _count(alone, color_for(0))
    # B's small box hides a corner of A's outline, never A's caption (~600 px).
    assert _count(both, color_for(0)) >= n_alone - 150
    assert _count(both, color_for(1)) > 300  # and B's caption is drawn too


def test_overview_grid():
    tiles = [np.full((64, 64, 3), (20 * i, 255 - 20 * i, 100), np.uint8) for i in range(10)]
    tiles[3] = np.full((100, 50, 3), (20 * 3, 255 - 20 * 3, 100), np.uint8)  # tall: centred
    captions = [f"{i:06d}.png" for i in range(10)]
    sheet = overview_sheet(tiles, columns=4, tile_size=64, captions=captions)
    band, gap = overview_band(64), 2
    assert sheet.shape == (3 * (band + 64 + gap) + gap, 4 * (64 + gap) + gap, 3)
    background = tuple(sheet[0, 0])
    found = []
    for k in range(12):
        y0 = gap + (k // 4) * (band + 64 + gap) + band
        x0 = gap + (k % 4) * (64 + gap)
        centre = tuple(sheet[y0 + 32, x0 + 32])
        if k < 10:
            assert centre == tuple(tiles[k][0, 0]), k
            found.append(centre)
        else:
            assert centre == background  # no tile in the last two cells
    assert len(set(found)) == 10
    # The tall tile keeps its aspect: 32 px wide, centred, background on both sides.
    y0, x0 = gap + band, gap + 3 * (64 + gap)
    assert tuple(sheet[y0 + 32, x0 + 15]) == background
    assert tuple(sheet[y0 + 32, x0 + 17]) == tuple(tiles[3][0, 0])
    assert sheet[gap:gap + band, gap:gap + 64].max() > 200  # the caption above the first tile
    # 16 tiles: 4 x 4; a legend adds a panel on the right only.
    sixteen = overview_sheet([tiles[0]] * 16, tile_size=64)
    assert sixteen.shape == (4 * 66 + 2, 4 * 66 + 2, 3)
    with_legend = overview_sheet([tiles[0]] * 16, tile_size=64,
                                 legend=[LegendEntry("class", 0, "cat")])
    assert with_legend.shape[0] == sixteen.shape[0] and with_legend.shape[1] > sixteen.shape[1]
    with pytest.raises(ValueError, match=r"captions: expected 2 \(one per tile\), got 1"):
        overview_sheet(tiles[:2], captions=["a"])
    with pytest.raises(ValueError, match="tiles: expected at least one picture"):
        overview_sheet([])


def test_overview_caption_too_wide_keeps_its_end_inside_the_cell():
    tiles = [np.zeros((64, 64, 3), np.uint8)] * 2
    sheet = overview_sheet(tiles, tile_size=64,
                           captions=["a_very_long_picture_name_000001.png", "b.png"])
    band, gap = overview_band(64), 2
    first = sheet[gap:gap + band, gap:gap + 64]
    assert first.max() > 200  # written
    assert (sheet[gap:gap + band, gap + 64:gap + 64 + gap] == sheet[0, 0]).all()  # not past it
