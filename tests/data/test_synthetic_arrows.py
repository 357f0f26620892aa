"""Arrow size options of the synthetic graph data (docs/design.md §5): the direction of a link
must be visible at the network's stride-4 maps."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from aehg.config import ConfigError, SyntheticConfig
from aehg.data.synthetic import GRAPH_LINK_COLORS, draw_graph_image, ensure_synthetic

BIG = {"arrow_head": 0.12, "arrow_width": 0.02}   # configs/demo_graph.yaml


def _halves(seed: int, **arrows: float) -> tuple[int, int, list, np.ndarray]:
    """Link-coloured pixels in the source and destination halves of a two-object image with
    one arrow (0, 0 when its objects were placed too close for one)."""
    image, objects, links = draw_graph_image(np.random.default_rng([5, 0, seed]), 128, 4, 3,
                                             2, 1, **arrows)
    if not len(links):
        return 0, 0, objects, links
    (src, dst, cls), = links
    colour = np.array(list(GRAPH_LINK_COLORS.values())[cls])
    mask = np.abs(image.astype(int) - colour).max(axis=2) < 40
    ys, xs = np.nonzero(mask)
    centre = [np.array([x + w / 2, y + h / 2]) for x, y, w, h in (o["bbox"] for o in objects)]
    axis = centre[dst] - centre[src]
    t = ((np.stack([xs, ys], 1) - centre[src]) @ axis) / (axis @ axis)
    return int((t < 0.5).sum()), int((t >= 0.5).sum()), objects, links


def test_big_heads_put_the_arrow_mass_at_the_destination():
    small, big = np.zeros(2), np.zeros(2)
    heavier_end = arrows = 0
    for seed in range(30):
        *s, obj_s, links_s = _halves(seed)
        *b, obj_b, links_b = _halves(seed, **BIG)
        # The options change the drawing only, never the objects and links.
        assert obj_s == obj_b and np.array_equal(links_s, links_b)
        small += s
        big += b
        heavier_end += b[1] > b[0]
        arrows += len(links_b)
    assert arrows >= 25
    assert big.sum() > 1.8 * small.sum()               # a 2 px line and a bigger head
    assert big[1] / big[0] > 1.5                        # the head at the destination …
    assert big[1] / big[0] > 1.2 * small[1] / small[0]  # … weighs more than the original's
    assert heavier_end == arrows                        # in every image


def test_default_arrows_leave_the_spec(tmp_path):
    cfg = SyntheticConfig(kind="graph", num_train=2, num_val=1)
    ensure_synthetic(cfg, tmp_path)
    assert not set(BIG) & set(json.loads((tmp_path / "spec.json").read_text()))
    ensure_synthetic(dataclasses.replace(cfg, **BIG), tmp_path)      # a new spec
    assert json.loads((tmp_path / "spec.json").read_text())["arrow_head"] == 0.12


@pytest.mark.parametrize("field, value", [("arrow_head", 0.0), ("arrow_head", 0.5),
                                          ("arrow_width", -0.01), ("arrow_width", 0.1)])
def test_invalid_arrow_sizes_name_the_key(field, value):
    with pytest.raises(ConfigError, match=rf"data\.synthetic\.{field}: expected a fraction of "
                                          rf"image_size in \(0, "):
        SyntheticConfig(kind="graph", **{field: value}).validate()
