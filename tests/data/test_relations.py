"""Relation dataset: object and link targets on synthetic graph data, collisions, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aehg.config import AugmentConfig, SyntheticConfig
from aehg.data.coco import DataFormatError
from aehg.data.relations import RelationDataset
from aehg.data.synthetic import ensure_synthetic
from aehg.data.transforms import AffineParams, apply_affine, random_affine_params


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    cfg = SyntheticConfig(kind="graph", num_train=24, num_val=2, num_object_classes=5,
                          num_link_classes=4, max_objects=8, max_relations=8, seed=1)
    paths = ensure_synthetic(cfg, root)
    data = json.loads(paths.train_json.read_text())
    return paths, data


def _dataset(paths, **kw) -> RelationDataset:
    kw = {"train": False, "input_size": 128, "output_size": 32, **kw}
    return RelationDataset(paths.train_json, paths.train_images, **kw)


def _check_sample(sample, data, ds, size):
    """Every relationship of the image against the targets, computed naively from the JSON."""
    meta = sample["meta"]
    anns = {a["id"]: a for a in data["annotations"] if a["image_id"] == meta["image_id"]}
    rels = [r for r in data["relationships"] if r["image_id"] == meta["image_id"]]
    row = {aid: n for n, aid in enumerate(meta["ann_ids"])}
    m = meta["transform"]

    def centre(ann):
        x, y, w, h = ann["bbox"]
        corners = apply_affine(np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]]), m)
        lo = np.clip(corners.min(0), -0.5, size - 0.5)
        hi = np.clip(corners.max(0), -0.5, size - 0.5)
        return (lo + hi) / 2, bool((hi > lo).all())

    parts = sample["parts"].numpy()
    for aid, ann in anns.items():
        (cx, cy), seen = centre(ann)
        n, c = row[aid], ds.cat_ids.index(ann["category_id"])
        ix, iy = int(np.floor(cx + 0.5)), int(np.floor(cy + 0.5))
        if seen and 0 <= ix < size and 0 <= iy < size:
            # Tags are shared (tag_per_class False): flat index without the class offset.
            assert parts[n, c].tolist() == [iy * size + ix, 1]
            assert sample["heatmaps"][c, iy, ix] == 1.0
        assert parts[n, np.arange(parts.shape[1]) != c, 1].sum() == 0

    links = sample["links"].numpy()
    listed = [tuple(r) for r in links[links[:, 4] == 1]]
    expected = []
    for r in rels:
        (cs, s_seen), (co, o_seen) = centre(anns[r["subject_id"]]), centre(anns[r["object_id"]])
        mx, my = np.floor((cs + co) / 2).astype(int)
        cls = ds.predicate_ids.index(r["predicate_id"])
        s_in = s_seen and all(0 <= v < size for v in np.floor(cs + 0.5))
        o_in = o_seen and all(0 <= v < size for v in np.floor(co + 0.5))
        if s_in and o_in and 0 <= mx < size and 0 <= my < size:
            expected.append((my * size + mx, row[r["subject_id"]], row[r["object_id"]], cls, 1))
            assert sample["link_heatmaps"][cls, my, mx] == 1.0
    assert listed == expected
    return len(expected)


def test_link_targets_point_at_the_right_objects(graph):
    paths, data = graph
    ds = _dataset(paths)
    assert ds.class_names[0] == "red_circle" and len(ds.predicate_names) == 4
    total = sum(_check_sample(ds[i], data, ds, 32) for i in range(len(ds)))
    assert total == len(data["relationships"])      # nothing lost at validation geometry
    # The dataset statistics agree: every object and relationship of the JSON, none lost.
    stats = ds.stats
    assert stats["links"] == len(data["relationships"]) and stats["links_dropped"] == 0
    assert stats["instances"] == stats["parts"] == len(data["annotations"])
    assert stats["instances_dropped"] == stats["parts_outside"] == 0


def test_link_targets_under_augmentation(graph):
    paths, data = graph
    ds = _dataset(paths)
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(rotation=30, scale_min=0.75, scale_max=1.5, translate=0.3, flip_prob=0.5)
    for i in range(len(ds)):
        _check_sample(ds.get(i, random_affine_params(rng, cfg)), data, ds, 32)


def test_boxes_and_sizes(graph):
    paths, data = graph
    ds = _dataset(paths, input_size=256, output_size=64)
    s = ds.get(0, AffineParams(scale=0.8))
    m = s["meta"]["transform"]
    anns = [a for a in data["annotations"] if a["image_id"] == s["meta"]["image_id"]]
    for n, a in enumerate(anns):
        x, y, w, h = a["bbox"]
        # Scale only (no rotation): the box maps to a box of the scaled size.
        np.testing.assert_allclose(s["box_size"][n].numpy(), [w * m[0, 0], h * m[1, 1]],
                                   rtol=1e-5)
        assert s["box_index"][n, 1] == 1
    assert s["meta"]["stats"]["object_collisions"] == 0


def _write_image(folder: Path, name: str, size: int = 64) -> None:
    cv2.imwrite(str(folder / name), np.zeros((size, size, 3), dtype=np.uint8))


def _tiny(tmp_path: Path) -> dict:
    _write_image(tmp_path, "a.png")
    box = lambda cx, cy: [cx - 4, cy - 4, 8, 8]  # noqa: E731
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
        "predicate_categories": [{"id": 7, "name": "near"}, {"id": 9, "name": "on"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": box(20, 20), "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": box(20.5, 20.5), "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": box(20, 20), "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 2, "bbox": box(44, 44), "iscrowd": 0},
        ],
        "relationships": [
            {"id": 1, "image_id": 1, "subject_id": 10, "object_id": 13, "predicate_id": 7},
            {"id": 2, "image_id": 1, "subject_id": 12, "object_id": 13, "predicate_id": 9},
            {"id": 3, "image_id": 1, "subject_id": 13, "object_id": 11, "predicate_id": 7},
        ],
    }


def test_collisions_are_counted(tmp_path):
    data = _tiny(tmp_path)
    data["annotations"][1]["bbox"] = [22, 22, 8, 8]               # "thing" 11 at (26, 26)
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    # input 64 = output 64 (stride 1): box centres are output pixels as given.
    ds = RelationDataset(path, tmp_path, input_size=64, output_size=64)
    s = ds[0]
    # 10 ("thing") and 12 ("other") share pixel (20, 20) but not a class: no object collision.
    # Links 10->13 and 12->13 (different predicates) both sit at floor(32, 32): one collision;
    # 13->11 sits at (35, 35).
    assert s["meta"]["stats"]["object_collisions"] == 0
    assert s["meta"]["stats"]["link_collisions"] == 1
    # 4 objects (one part each), all inside; 3 relationships, all listed.
    assert s["meta"]["stats"] == {"instances_dropped": 0, "parts_outside": 0, "links_dropped": 0,
                                  "instances": 4, "parts": 4, "links": 3,
                                  "object_collisions": 0, "link_collisions": 1}
    data["annotations"][1]["bbox"] = [16.2, 16.2, 8, 8]           # 11 at (20.2, 20.2) -> (20, 20)
    path.write_text(json.dumps(data))
    ds = RelationDataset(path, tmp_path, input_size=64, output_size=64)
    s = ds[0]
    assert s["meta"]["stats"]["object_collisions"] == 1
    assert s["meta"]["stats"]["link_collisions"] == 2            # 13->11 now at floor(32.1)
    assert ds.stats["object_collisions"] == 1 and ds.stats["link_collisions"] == 2
    assert ds.stats == {"instances_dropped": 0, "parts_outside": 0, "links_dropped": 0,
                        "instances": 4, "parts": 4, "links": 3, "object_collisions": 1,
                        "link_collisions": 2, "images": 1, "skipped_images": 0}
    assert ds.predicate_names == ["near", "on"] and ds.links(1).tolist() == [
        [0, 3, 0], [2, 3, 1], [3, 1, 0]]


def test_slot_targets_and_counts(tmp_path):
    """With slots (docs/design.md "Slots") the objects and links are listed per pixel."""
    data = _tiny(tmp_path)
    data["annotations"][1]["bbox"] = [16.2, 16.2, 8, 8]           # 10, 11, 12 on (20, 20)
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    ds = RelationDataset(path, tmp_path, input_size=64, output_size=64, object_slots=2,
                         relation_slots=3)
    s = ds[0]
    assert s["object_groups"][:2].tolist() == [[0, 1], [3, -1]]   # row 2 found no slot
    assert s["link_groups"][0].tolist() == [0, 1, 2]               # all three at (32, 32)
    assert s["meta"]["stats"]["objects_beyond_slots"] == 1
    assert s["meta"]["stats"]["links_beyond_slots"] == 0
    assert "object_groups" not in RelationDataset(path, tmp_path, input_size=64,
                                                  output_size=64)[0]


@pytest.mark.parametrize("field", ["predicate_categories", "relationships"])
def test_missing_relation_fields(tmp_path, field):
    data = _tiny(tmp_path)
    del data[field]
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=rf"rel\.json: not a COCO file: missing field "
                                              rf"'{field}'"):
        RelationDataset(path, tmp_path)


@pytest.mark.parametrize("key", ["subject_id", "object_id"])
def test_relationship_naming_missing_annotation(tmp_path, key):
    data = _tiny(tmp_path)
    data["relationships"][1][key] = 999
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=rf"rel\.json: relationship id 2: field '{key}' "
                                              r"names missing annotation 999"):
        RelationDataset(path, tmp_path)


def test_relationship_with_bad_predicate_or_image(tmp_path):
    data = _tiny(tmp_path)
    bad = copy.deepcopy(data)
    bad["relationships"][0]["predicate_id"] = 8
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"relationship id 1: field 'predicate_id' names "
                                              r"missing predicate 8"):
        RelationDataset(path, tmp_path)
    bad = copy.deepcopy(data)
    bad["images"].append({"id": 2, "file_name": "a.png", "width": 64, "height": 64})
    bad["relationships"][2]["image_id"] = 2
    path.write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"relationship id 3: field 'subject_id' names "
                                              r"annotation 13 of image 1, not of image 2"):
        RelationDataset(path, tmp_path)


def test_bad_box(tmp_path):
    data = _tiny(tmp_path)
    data["annotations"][2]["bbox"] = [1, 2, -3, 4]
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"annotation id 12: field 'bbox'"):
        RelationDataset(path, tmp_path)
