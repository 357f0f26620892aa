"""Synthetic graph data that collides: shared centres, reverse relations, several predicates.

The proportions are checked on the data of configs/demo_graph_slots.yaml (at its output size),
the original demo data against a pinned hash of its pixels and annotations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from aehg.config import ConfigError, SyntheticConfig, load_config
from aehg.data.relations import RelationDataset
from aehg.data.synthetic import (
    GRAPH_OBJECT_CLASSES,
    GRAPH_OBJECT_COLORS,
    draw_graph_image,
    ensure_synthetic,
    generate_split,
)

ROOT = Path(__file__).resolve().parents[2]
SLOTS = load_config(ROOT / "configs" / "demo_graph_slots.yaml")
# sha256 of annotations/val.json and the decoded pixels of the 5 val images of the original demo
# spec (configs/demo_graph.yaml, num_val 5), taken before the collision options existed. A new
# OpenCV whose anti-aliasing differs would change it too: then regenerate it with the generator
# of that commit and compare.
DEMO_HASH = "fd4929e6084bfa1b82fbe0d8c6a385299ee0112bd5f8474cb2b3109b0bcba6d8"


def _centre(bbox: list[float]) -> tuple[float, float]:
    x, y, w, h = bbox
    return x + w / 2, y + h / 2


@pytest.fixture(scope="module")
def slots_data(tmp_path_factory):
    """300 training images of the slots demo spec: (annotations dict, image folder)."""
    root = tmp_path_factory.mktemp("slots")
    cfg = dataclasses.replace(SLOTS.data.synthetic, num_train=300, num_val=1)
    data = generate_split(cfg, "train", root / "images", root / "train.json")
    return data, root / "images"


def test_original_demo_data_is_unchanged(tmp_path):
    # The demo now draws bigger arrows (tests/data/test_synthetic_arrows.py); the rest of its
    # spec with the default arrows is the original data.
    cfg = dataclasses.replace(load_config(ROOT / "configs" / "demo_graph.yaml").data.synthetic,
                              num_train=1, num_val=5, arrow_head=0.05, arrow_width=0.01)
    assert cfg.shared_centre_prob == cfg.reverse_prob == cfg.multi_predicate_prob == 0.0
    generate_split(cfg, "val", tmp_path / "val", tmp_path / "val.json")
    digest = hashlib.sha256((tmp_path / "val.json").read_bytes())
    for path in sorted((tmp_path / "val").iterdir()):
        digest.update(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes())
    assert digest.hexdigest() == DEMO_HASH


def test_options_off_leave_the_spec_so_existing_folders_are_not_regenerated(tmp_path):
    cfg = SyntheticConfig(kind="graph", num_train=3, num_val=1)
    paths = ensure_synthetic(cfg, tmp_path)
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert not {"shared_centre_prob", "reverse_prob", "multi_predicate_prob"} & set(spec)
    stamp = paths.train_json.stat().st_mtime_ns
    ensure_synthetic(dataclasses.replace(cfg, reverse_prob=0.0), tmp_path)
    assert paths.train_json.stat().st_mtime_ns == stamp
    ensure_synthetic(dataclasses.replace(cfg, reverse_prob=0.5), tmp_path)   # a new spec
    assert json.loads((tmp_path / "spec.json").read_text())["reverse_prob"] == 0.5


def test_shared_centres_at_the_output_size(slots_data):
    data, images = slots_data
    syn, out = SLOTS.data.synthetic, SLOTS.data.output_size
    assert syn.shared_centre_prob == 0.3 and out == 32
    scale = out / syn.image_size                   # square images: the validation warp
    by_image = defaultdict(list)
    for a in data["annotations"]:
        by_image[a["image_id"]].append(a)
    shared = total = 0
    for anns in by_image.values():
        total += len(anns)
        pixel = [tuple(np.floor(np.multiply(_centre(a["bbox"]), scale) + 0.5)) for a in anns]
        for i, j in combinations(range(len(anns)), 2):
            if pixel[i] != pixel[j]:
                continue
            shared += 1
            a, b = anns[i], anns[j]
            assert _centre(a["bbox"]) == _centre(b["bbox"])          # exactly, in the JSON
            outer, inner = (a, b) if a["bbox"][2] > b["bbox"][2] else (b, a)
            colour = [GRAPH_OBJECT_CLASSES[x["category_id"] - 1][1] for x in (outer, inner)]
            assert colour[0] != colour[1]                          # another class and colour
            assert 0.45 <= inner["bbox"][2] / outer["bbox"][2] <= 0.85
            # Drawn on top: the partner's colour at the centre, the outer's around it.
            img = cv2.imread(str(images / f"{outer['image_id'] - 1:06d}.png")).astype(int)
            cx, cy = (int(v) for v in np.floor(np.array(_centre(inner["bbox"]))))
            assert np.abs(img[cy, cx] - GRAPH_OBJECT_COLORS[colour[1]]).max() <= 2
            x, y, w, h = (int(round(v)) for v in outer["bbox"])
            ring = np.ones((h, w), dtype=bool)
            ix, iy, iw, ih = (int(round(v)) - o for v, o in zip(inner["bbox"], (x, y, 0, 0),
                                                                   strict=True))
            ring[max(iy - 1, 0):iy + ih + 1, max(ix - 1, 0):ix + iw + 1] = False
            near = np.abs(img[y:y + h, x:x + w] - GRAPH_OBJECT_COLORS[colour[0]]).max(axis=2)
            assert (near[ring] <= 30).sum() >= 1
    placed = total - shared            # each partner shares the centre of one placed object
    assert shared > 100
    assert abs(shared / placed - syn.shared_centre_prob) < 0.06   # ~4 binomial sd


def test_reverse_and_multi_predicate_pairs(slots_data):
    data, _ = slots_data
    syn = SLOTS.data.synthetic
    predicates: dict[tuple[int, int], set[int]] = defaultdict(set)
    for r in data["relationships"]:
        key = (r["subject_id"], r["object_id"])
        assert r["predicate_id"] not in predicates[key]             # no repeated triplet
        predicates[key].add(r["predicate_id"])
    unordered = {tuple(sorted(k)) for k in predicates}
    reverse = sum((a, b) in predicates and (b, a) in predicates for a, b in unordered)
    multi = sum(len(v) >= 2 for v in predicates.values())
    assert max(len(v) for v in predicates.values()) == 2
    assert reverse > 50 and multi > 50
    assert abs(reverse / len(unordered) - syn.reverse_prob) < 0.07
    assert abs(multi / len(unordered) - syn.multi_predicate_prob) < 0.07


def test_the_pipeline_sees_link_collisions(slots_data, tmp_path):
    data, images = slots_data
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    d = SLOTS.data
    ds = RelationDataset(path, images, input_size=d.input_size, output_size=d.output_size,
                         sigma=d.sigma, max_instances=d.max_instances, max_links=d.max_links)
    stats = ds.stats
    # A reverse pair and a second predicate share the link pixel of their pair.
    assert stats["link_collisions"] > 100
    assert stats["instances_dropped"] == 0 and stats["links_dropped"] == 0


def test_deterministic_by_seed(tmp_path):
    cfg = dataclasses.replace(SLOTS.data.synthetic, num_train=6, num_val=1)
    a = generate_split(cfg, "train", tmp_path / "a", tmp_path / "a.json")
    b = generate_split(cfg, "train", tmp_path / "b", tmp_path / "b.json")
    c = generate_split(dataclasses.replace(cfg, seed=1), "train", tmp_path / "c",
                       tmp_path / "c.json")
    assert a == b and a != c
    for name in ("000000.png", "000005.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Image i depends only on the seed, the split and i.
    first = draw_graph_image(np.random.default_rng([0, 0, 3]), 128, 4, 3, 5, 4,
                             shared_centre_prob=0.5, reverse_prob=0.5, multi_predicate_prob=0.5)
    again = draw_graph_image(np.random.default_rng([0, 0, 3]), 128, 4, 3, 5, 4,
                             shared_centre_prob=0.5, reverse_prob=0.5, multi_predicate_prob=0.5)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert np.array_equal(first[2], again[2])


def test_links_name_existing_distinct_objects():
    counts = Counter()
    for i in range(40):
        _, objects, links = draw_graph_image(np.random.default_rng([7, 0, i]), 128, 4, 3, 5, 4,
                                             shared_centre_prob=1.0, reverse_prob=1.0,
                                             multi_predicate_prob=1.0)
        assert len(objects) % 2 == 0                  # probability 1: every object has one
        assert ((links[:, :2] >= 0) & (links[:, :2] < len(objects))).all()
        assert (links[:, 0] != links[:, 1]).all() and ((links[:, 2] >= 0) & (links[:, 2] < 3)).all()
        counts["links"] += len(links)
        counts["partner_ends"] += int((links[:, :2] >= len(objects) // 2).sum())
    assert counts["links"] > 0 and counts["links"] % 3 == 0      # base, second, reverse
    assert 0 < counts["partner_ends"] < 2 * counts["links"]       # both objects of a place


@pytest.mark.parametrize("field, value, match", [
    ("shared_centre_prob", 1.5, r"data\.synthetic\.shared_centre_prob: expected a value in"),
    ("reverse_prob", -0.1, r"data\.synthetic\.reverse_prob: expected a value in"),
    ("multi_predicate_prob", 2.0, r"data\.synthetic\.multi_predicate_prob: expected a value"),
])
def test_invalid_probabilities(field, value, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticConfig(kind="graph", **{field: value}).validate()


def test_options_need_two_classes():
    with pytest.raises(ConfigError, match=r"shared_centre_prob: needs data\.synthetic\."
                                          r"num_object_classes >= 2, got 1"):
        SyntheticConfig(kind="graph", num_object_classes=1, shared_centre_prob=0.2).validate()
    with pytest.raises(ConfigError, match=r"multi_predicate_prob: needs data\.synthetic\."
                                          r"num_link_classes >= 2, got 1"):
        SyntheticConfig(kind="graph", num_link_classes=1, multi_predicate_prob=0.2).validate()


def test_make_synthetic_takes_the_options(tmp_path, capsys):
    path = ROOT / "tools" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("aehg_tool_make_synthetic_collisions", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    code = tool.main(["--kind", "graph", "--root", str(tmp_path / "d"), "--num-train", "2",
                      "--num-val", "1", "--shared-centre-prob", "0.5", "--reverse-prob", "0.25"])
    assert code == 0
    written = json.loads((tmp_path / "d" / "spec.json").read_text())
    assert written["shared_centre_prob"] == 0.5 and written["reverse_prob"] == 0.25
    assert "multi_predicate_prob" not in written
