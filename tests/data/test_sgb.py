"""Scene-Graph-Benchmark h5 → relation format: a round trip through SGB's exact h5 layout built
from the 100-image Visual Genome sample, SGB's filters on hand-made files, and bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from aehg.data.coco import DataFormatError
from aehg.data.relations import RelationDataset
from aehg.data.sgb import (
    convert_sgb,
    load_sgb,
    load_train_triplets,
    training_triplets,
    write_train_triplets,
)
from aehg.data.visual_genome import convert_visual_genome

SAMPLE = Path(__file__).parent / "visual_genome_sample"
DICTS = SAMPLE / "VG-SGG-dicts-with-attri.json"
ROOT = Path(__file__).resolve().parents[2]
N_TRAIN = 70  # images 0..69 get split 0, 70..99 split 2 (the released 70/30 order split)


# --------------------------------------------------------------------------- building h5 files


def _encode_box(x1, y1, x2, y2, width, height, scale):
    """Pixel xyxy → SGB's stored int (x_c, y_c, w, h) at ``scale``, as vg_to_roidb.py encodes
    (floor of the corner, ceil of the size, clamped to the scaled image, centre = corner +
    floor(size / 2))."""
    s = scale / max(width, height)
    x, y = math.floor(s * x1), math.floor(s * y1)
    w, h = math.ceil(s * (x2 - x1)), math.ceil(s * (y2 - y1))
    x, y = min(max(x, 0), scale - 2), min(max(y, 0), scale - 2)
    w, h = (scale - x if x + w >= scale else w), (scale - y if y + h >= scale else h)
    return [x + w // 2, y + h // 2, w, h]


def _write_h5(path, images, split, *, boxes_key=("boxes_1024", "boxes_512"), drop=(),
              override=None):
    """Write SGB's layout. ``images``: per h5 row a dict with ``boxes`` (n, 4) int x_c y_c w h
    at 1024 (and ``boxes_512``), ``labels`` (n,), ``rels`` (m, 3) local subject, object,
    predicate."""
    labels, b1024, b512, rel_pairs, preds = [], [], [], [], []
    first_box, last_box, first_rel, last_rel = [], [], [], []
    for im in images:
        n, start = len(im["labels"]), len(labels)
        first_box.append(start if n else -1)
        last_box.append(start + n - 1 if n else -1)
        labels += list(im["labels"])
        b1024 += [list(b) for b in im["boxes"]]
        b512 += [list(b) for b in im.get("boxes_512", im["boxes"])]
        m, rstart = len(im["rels"]), len(preds)
        first_rel.append(rstart if m else -1)
        last_rel.append(rstart + m - 1 if m else -1)
        for s, o, p in im["rels"]:
            rel_pairs.append([start + s, start + o])
            preds.append(p)
    arrays = {
        "split": np.asarray(split, dtype=np.int32),
        "labels": np.asarray(labels, dtype=np.int64).reshape(-1, 1),
        "boxes_1024": np.asarray(b1024, dtype=np.int32).reshape(-1, 4),
        "boxes_512": np.asarray(b512, dtype=np.int32).reshape(-1, 4),
        "attributes": np.zeros((len(labels), 10), dtype=np.int64),
        "img_to_first_box": np.asarray(first_box, dtype=np.int32),
        "img_to_last_box": np.asarray(last_box, dtype=np.int32),
        "img_to_first_rel": np.asarray(first_rel, dtype=np.int32),
        "img_to_last_rel": np.asarray(last_rel, dtype=np.int32),
        "relationships": np.asarray(rel_pairs, dtype=np.int32).reshape(-1, 2),
        "predicates": np.asarray(preds, dtype=np.int64).reshape(-1, 1),
    }
    arrays.update(override or {})
    with h5py.File(path, "w") as f:
        for name, arr in arrays.items():
            if name not in drop:
                f.create_dataset(name, data=arr)
    return path


def _per_image(data):
    """Converter output → per image (in order): its annotations and relations as local
    (subject, object, predicate) rows."""
    anns = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        anns[a["image_id"]].append(a)
    rels = {im["id"]: [] for im in data["images"]}
    for r in data["relationships"]:
        rels[r["image_id"]].append(r)
    out = []
    for im in data["images"]:
        row = {a["id"]: k for k, a in enumerate(anns[im["id"]])}
        out.append({"image": im, "anns": anns[im["id"]],
                    "rels": [(row[r["subject_id"]], row[r["object_id"]], r["predicate_id"])
                             for r in rels[im["id"]]]})
    return out


@pytest.fixture(scope="module")
def vg():
    data, _ = convert_visual_genome(SAMPLE / "scene_graphs_first100.json",
                                    SAMPLE / "image_data_first100.json", DICTS,
                                    SAMPLE / "xu_object_alias.txt",
                                    SAMPLE / "xu_predicate_alias.txt")
    return _per_image(data)


@pytest.fixture(scope="module")
def sgb_files(vg, tmp_path_factory):
    """The sample in SGB's layout: h5 rows = images 1..100 in order, image_data.json with one of
    SGB's corrupted ids (1592) inserted, which the converter must skip to keep rows aligned."""
    folder = tmp_path_factory.mktemp("sgb")
    images = []
    for entry in vg:
        w, h = entry["image"]["width"], entry["image"]["height"]
        xyxy = [(x, y, x + bw, y + bh) for x, y, bw, bh in (a["bbox"] for a in entry["anns"])]
        images.append({"boxes": [_encode_box(*b, w, h, 1024) for b in xyxy],
                       "boxes_512": [_encode_box(*b, w, h, 512) for b in xyxy],
                       "labels": [a["category_id"] for a in entry["anns"]],
                       "rels": entry["rels"]})
    split = [0] * N_TRAIN + [2] * (len(vg) - N_TRAIN)
    h5 = _write_h5(folder / "VG-SGG-with-attri.h5", images, split)
    infos = json.loads((SAMPLE / "image_data_first100.json").read_text())
    infos.insert(5, {"image_id": 1592, "width": 10, "height": 10, "url": "corrupted"})
    image_data = folder / "image_data.json"
    image_data.write_text(json.dumps(infos))
    return {"h5": h5, "image_data": image_data, "images": images, "split": split}


def _expected_splits(vg, num_val, filter_empty_rels=True):
    keep = [k for k, e in enumerate(vg) if e["anns"] and (e["rels"] or not filter_empty_rels)]
    train = [k for k in keep if k < N_TRAIN]
    return {"train": train[num_val:], "val": train[:num_val],
            "test": [k for k in keep if k >= N_TRAIN]}


def _check_split_equals_converter(split_data, rows, vg, scale=1024):
    got = _per_image(split_data)
    assert [g["image"]["id"] for g in got] == [vg[k]["image"]["id"] for k in rows]
    for g, k in zip(got, rows, strict=True):
        want = vg[k]
        w, h = want["image"]["width"], want["image"]["height"]
        assert (g["image"]["width"], g["image"]["height"]) == (w, h)
        assert g["image"]["file_name"] == f"{want['image']['id']}.jpg"
        assert g["image"]["sgb_index"] == k
        assert [a["category_id"] for a in g["anns"]] == [a["category_id"] for a in want["anns"]]
        got_xyxy = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in
                             (a["bbox"] for a in g["anns"])])
        want_xyxy = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in
                              (a["bbox"] for a in want["anns"])])
        # SGB clips to [0, size - 1]; the store rounds to 1/scale of the long side: < 2 units.
        want_xyxy[:, 0::2] = want_xyxy[:, 0::2].clip(0, w - 1)
        want_xyxy[:, 1::2] = want_xyxy[:, 1::2].clip(0, h - 1)
        tol = 2 * max(w, h) / scale
        assert np.abs(got_xyxy - want_xyxy).max() < tol, want["image"]["id"]
        assert g["rels"] == want["rels"]


def test_round_trip_equals_the_converter_output(sgb_files, vg, tmp_path):
    out = tmp_path / "out"
    report = convert_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], out,
                         filter_duplicate_rels=False, num_val=10)
    expected = _expected_splits(vg, num_val=10)
    for name, rows in expected.items():
        data = json.loads((out / f"{name}.json").read_text())
        _check_split_equals_converter(data, rows, vg)
        assert report[f"{name}_images"] == len(rows)
    # Pinned counts of the sample: which images the filters drop, and nothing dropped while
    # training (no box empties on clipping).
    assert report["image_data_skipped"] == 1
    assert report["h5_images"] == 100
    assert (report["train_images"], report["val_images"], report["test_images"]) == (55, 10, 23)
    assert (report["images_without_boxes"], report["images_without_relations"]) == (1, 11)
    assert report["train_objects_dropped_empty"] == report["train_relations_dropped_empty"] == 0
    assert sorted(report["files"]) == sorted(str(out / n) for n in (
        "train.json", "val.json", "test.json", "train_triplets.json"))
    # The files are what RelationDataset reads.
    ds = RelationDataset(out / "train.json", tmp_path)
    assert len(ds) == len(expected["train"]) and ds.num_predicates == 50
    assert ds.num_classes == 150


def test_boxes_512_give_the_same_data(sgb_files, vg):
    data = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], box_scale=512,
                    filter_duplicate_rels=False, num_val=10)
    for name, rows in _expected_splits(vg, num_val=10).items():
        _check_split_equals_converter(data.splits()[name], rows, vg, scale=512)


def test_filter_empty_rels_off_keeps_images_without_relations(sgb_files, vg):
    data = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], filter_empty_rels=False,
                    filter_duplicate_rels=False, num_val=10)
    expected = _expected_splits(vg, num_val=10, filter_empty_rels=False)
    # 11 images have objects but no relation (1 has no object at all): 4 train, 7 test.
    assert {k: len(v) for k, v in expected.items()} == {"train": 59, "val": 10, "test": 30}
    for name, rows in expected.items():
        _check_split_equals_converter(data.splits()[name], rows, vg)


def test_train_triplets_file(sgb_files, vg, tmp_path):
    out = tmp_path / "out"
    convert_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], out, num_val=10)
    rows = _expected_splits(vg, num_val=10)["train"]
    want = set()
    for k in rows:
        cat = [a["category_id"] for a in vg[k]["anns"]]
        want |= {(cat[s], p, cat[o]) for s, o, p in vg[k]["rels"]}
    saved = json.loads((out / "train_triplets.json").read_text())
    assert saved["columns"] == ["subject_category_id", "predicate_id", "object_category_id"]
    assert [tuple(t) for t in saved["triplets"]] == sorted(want)
    # As class indices (id k → index k − 1 for the 1-based VG150 ids).
    idx = load_train_triplets(out / "train_triplets.json", list(range(1, 151)),
                              list(range(1, 51)))
    np.testing.assert_array_equal(idx, np.array(sorted(want)) - 1)
    # The generic helper on a relation-format dict gives the same set when nothing is sampled.
    no_dup = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"],
                      filter_duplicate_rels=False, num_val=10)
    assert training_triplets(no_dup.train) == sorted(want)


def test_duplicate_filter_is_a_seeded_choice_per_pair(sgb_files, vg):
    kw = {"num_val": 10}
    a = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], seed=0, **kw)
    b = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], seed=0, **kw)
    c = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"], seed=1, **kw)
    full = load_sgb(sgb_files["h5"], DICTS, sgb_files["image_data"],
                    filter_duplicate_rels=False, **kw)
    assert a.train == b.train
    rows = _expected_splits(vg, num_val=10)["train"]
    multi = 0
    for g, k in zip(_per_image(a.train), rows, strict=True):
        pairs: dict[tuple[int, int], list[int]] = {}
        for s, o, p in vg[k]["rels"]:
            pairs.setdefault((s, o), []).append(p)
        multi += sum(len(v) > 1 for v in pairs.values())
        # One relation per pair, in first-occurrence order, its predicate one of the pair's.
        assert [(s, o) for s, o, _ in g["rels"]] == list(pairs)
        assert all(p in pairs[(s, o)] for s, o, p in g["rels"])
    assert multi == a.report["train_relations_dropped_duplicate"] > 0
    assert a.train != c.train  # another seed draws differently somewhere
    # Validation and test keep every relation (SGB's evaluation ground truth); the triplet set
    # is taken before the draw.
    assert a.val == full.val and a.test == full.test
    assert a.train_triplets == full.train_triplets
    assert a.report["train_relations"] == full.report["train_relations"] - multi


# --------------------------------------------------------------------------- hand-made files


def _square(cx, cy, w, h):
    return [cx, cy, w, h]


def _hand_files(tmp_path, images, split, sizes, **kw):
    h5 = _write_h5(tmp_path / "hand.h5", images, split, **kw)
    infos = [{"image_id": 1000 + i, "width": w, "height": h} for i, (w, h) in enumerate(sizes)]
    image_data = tmp_path / "image_data.json"
    image_data.write_text(json.dumps(infos))
    return h5, image_data


def test_box_decoding_follows_sgb_integer_arithmetic_and_clip(tmp_path):
    # Image 1024 x 512 (long side 1024, so one unit = one pixel).
    images = [{"boxes": [_square(5, 5, 3, 3), _square(1000, 500, 100, 40), _square(8, 6, 4, 2)],
               "labels": [1, 2, 3], "rels": [[0, 1, 1], [1, 2, 2]]}]
    h5, image_data = _hand_files(tmp_path, images, [2], [(1024, 512)])
    data = load_sgb(h5, DICTS, image_data)
    bbox = [a["bbox"] for a in data.test["annotations"]]
    # (5, 5, 3, 3): x1 = trunc(5 − 1.5) = 3, x2 = 3 + 3 = 6.
    assert bbox[0] == [3.0, 3.0, 3.0, 3.0]
    # (1000, 500, 100, 40): x1 = 950, x2 = 1050 → 1023; y1 = 480, y2 = 520 → 511.
    assert bbox[1] == [950.0, 480.0, 73.0, 31.0]
    # Even sizes: no truncation, (8, 6, 4, 2) → [6, 5, 10, 7].
    assert bbox[2] == [6.0, 5.0, 4.0, 2.0]
    assert [a["id"] for a in data.test["annotations"]] == [1, 2, 3]  # h5 box row + 1
    assert [(r["id"], r["subject_id"], r["object_id"], r["predicate_id"])
            for r in data.test["relationships"]] == [(1, 1, 2, 1), (2, 2, 3, 2)]
    # A float h5 keeps the half pixel, as SGB's float arithmetic would.
    override = {"boxes_1024": np.array([[5, 5, 3, 3], [1000, 500, 100, 40], [8, 6, 4, 2]],
                                       dtype=np.float32)}
    (tmp_path / "float").mkdir()
    h5f, _ = _hand_files(tmp_path / "float", images, [2], [(1024, 512)], override=override)
    assert load_sgb(h5f, DICTS, image_data).test["annotations"][0]["bbox"] == [3.5, 3.5, 3, 3]
    # Scaled to the image: 512 x 256 halves every coordinate.
    image_data.write_text(json.dumps([{"image_id": 1000, "width": 512, "height": 256}]))
    assert load_sgb(h5, DICTS, image_data).test["annotations"][0]["bbox"] == [1.5, 1.5, 1.5, 1.5]


def test_split_carve_out_num_im_and_empty_images(tmp_path):
    one = {"boxes": [_square(10, 10, 4, 4), _square(30, 30, 4, 4)], "labels": [1, 2],
           "rels": [[0, 1, 1]]}
    no_rel = dict(one, rels=[])
    no_box = {"boxes": [], "labels": [], "rels": []}
    # rows: 0 train, 1 test, 2 train (no rels), 3 train, 4 train (no boxes), 5 train, 6 train
    images = [one, one, no_rel, one, no_box, one, one]
    split = [0, 2, 0, 0, 0, 0, 0]
    h5, image_data = _hand_files(tmp_path, images, split, [(64, 64)] * 7)

    def rows(d, name):
        return [im["sgb_index"] for im in d.splits()[name]["images"]]

    d = load_sgb(h5, DICTS, image_data, num_val=2)
    assert (rows(d, "val"), rows(d, "train"), rows(d, "test")) == ([0, 3], [5, 6], [1])
    assert (d.report["images_without_boxes"], d.report["images_without_relations"]) == (1, 1)
    d = load_sgb(h5, DICTS, image_data, num_val=2, filter_empty_rels=False)
    assert (rows(d, "val"), rows(d, "train")) == ([0, 2], [3, 5, 6])
    d = load_sgb(h5, DICTS, image_data, num_val=2, num_im=3)  # the first 3 usable train rows
    assert (rows(d, "val"), rows(d, "train"), rows(d, "test")) == ([0, 3], [5], [1])
    d = load_sgb(h5, DICTS, image_data, num_val=0)
    assert (rows(d, "val"), rows(d, "train")) == ([], [0, 3, 5, 6])
    d = load_sgb(h5, DICTS, image_data, num_val=10)
    assert (rows(d, "val"), rows(d, "train")) == ([0, 3, 5, 6], [])


def test_non_overlap_filter_and_empty_boxes_only_in_training(tmp_path):
    # At BOX_SCALE a = (5, 5, 10, 10) → [0, 0, 10, 10] and b = (15, 5, 10, 10) → [10, 0, 20, 10]
    # only touch, which counts as overlap under "+1 pixel" (inter width 10 − 10 + 1 = 1 > 0);
    # c = [495, 495, 505, 505] is far away.
    a, b, c = _square(5, 5, 10, 10), _square(15, 5, 10, 10), _square(500, 500, 10, 10)
    im0 = {"boxes": [a, b, c], "labels": [1, 2, 3], "rels": [[0, 1, 1], [0, 2, 2], [2, 1, 3]]}
    im1 = {"boxes": [a, c], "labels": [1, 3], "rels": [[0, 1, 4]]}  # only a non-overlapping pair
    # Image 2 is 100 wide: f = [85, 40, 105, 60] and d = [100, 40, 200, 60] overlap at
    # BOX_SCALE, but d lies right of the image and clips to x1 = x2 = 99 (empty).
    f, d = _square(95, 50, 20, 20), _square(150, 50, 100, 20)
    im2 = {"boxes": [f, d], "labels": [1, 4], "rels": [[0, 1, 5], [1, 0, 6]]}
    sizes = [(1024, 1024), (1024, 1024), (100, 1024)]
    h5, image_data = _hand_files(tmp_path, [im0, im1, im2] * 2, [0, 0, 0, 2, 2, 2], sizes * 2)
    plain = load_sgb(h5, DICTS, image_data, num_val=0)
    kept = load_sgb(h5, DICTS, image_data, num_val=0, filter_non_overlap=True)
    train = _per_image(kept.train)
    assert [g["image"]["sgb_index"] for g in train] == [0, 2]
    assert train[0]["rels"] == [(0, 1, 1)]
    # Training drops the empty box d and its relations (image 2 keeps no relation).
    assert len(train[1]["anns"]) == 1 and train[1]["rels"] == []
    assert (kept.report["train_images_dropped_non_overlap"],
            kept.report["train_relations_dropped_non_overlap"]) == (1, 3)
    assert (kept.report["train_objects_dropped_empty"],
            kept.report["train_relations_dropped_empty"]) == (1, 2)
    # Without the overlap filter every training relation stays (but the empty box goes).
    assert [len(g["rels"]) for g in _per_image(plain.train)] == [3, 1, 0]
    # Test: no filter at all; the empty box is kept as a zero-width box at x = 99.
    test = _per_image(kept.test)
    assert [len(g["rels"]) for g in test] == [3, 1, 2]
    assert test[2]["anns"][1]["bbox"][0] == 99.0 and test[2]["anns"][1]["bbox"][2] == 0.0
    assert kept.test == plain.test


def test_write_and_load_train_triplets_errors(tmp_path):
    path = write_train_triplets(tmp_path / "t.json", [(3, 1, 1), (1, 1, 1), (3, 1, 1)], "x")
    assert json.loads(path.read_text())["triplets"] == [[1, 1, 1], [3, 1, 1]]
    np.testing.assert_array_equal(load_train_triplets(path), [[1, 1, 1], [3, 1, 1]])
    np.testing.assert_array_equal(load_train_triplets(path, [1, 3], [1]), [[0, 0, 0], [1, 0, 0]])
    with pytest.raises(DataFormatError, match=r"t\.json: triplets\[1\]: subject category id 3 "
                                              r"is not one of the 1 ids"):
        load_train_triplets(path, [1], [1])
    (tmp_path / "bad.json").write_text('{"triplets": [[1, 2]]}')
    with pytest.raises(DataFormatError, match=r"bad\.json: expected"):
        load_train_triplets(tmp_path / "bad.json")


# --------------------------------------------------------------------------- bad input


def _good(tmp_path):
    one = {"boxes": [_square(10, 10, 4, 4), _square(30, 30, 4, 4), _square(50, 50, 4, 4)],
           "labels": [1, 2, 3], "rels": [[0, 1, 1], [1, 2, 2]]}
    return [one, one, one, one], [0, 0, 2, 2], [(64, 64)] * 4


def _assert_rejected(tmp_path, h5, image_data, pattern):
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=pattern):
        convert_sgb(h5, DICTS, image_data, out, num_val=1)
    assert not out.exists()  # nothing written half-way


def test_missing_dataset(tmp_path):
    images, split, sizes = _good(tmp_path)
    h5, image_data = _hand_files(tmp_path, images, split, sizes, drop=("img_to_last_rel",))
    _assert_rejected(tmp_path, h5, image_data,
                     r"hand\.h5: missing dataset\(s\) 'img_to_last_rel' \(SGB's VG-SGG h5 "
                     r"layout has split, img_to_first_box")


@pytest.mark.parametrize("value", [1, -1, 3])
def test_split_value_other_than_0_or_2(tmp_path, value):
    images, split, sizes = _good(tmp_path)
    split[3] = value
    h5, image_data = _hand_files(tmp_path, images, split, sizes)
    _assert_rejected(tmp_path, h5, image_data,
                     rf"hand\.h5: dataset 'split' index 3: expected 0 \(train\) or 2 \(test\), "
                     rf"got {value}")


def test_relation_past_the_box_range(tmp_path):
    images, split, sizes = _good(tmp_path)
    images[1] = dict(images[1], rels=[[0, 1, 1], [1, 3, 2]])  # local box 3 = global row 6
    h5, image_data = _hand_files(tmp_path, images, split, sizes)
    _assert_rejected(tmp_path, h5, image_data,
                     r"hand\.h5: dataset 'relationships' index 3: box row 6 lies outside the "
                     r"box range \[3, 5\] of image index 1")


def test_image_data_shorter_or_longer_than_the_h5(tmp_path):
    images, split, sizes = _good(tmp_path)
    h5, image_data = _hand_files(tmp_path, images, split, sizes)
    infos = json.loads(image_data.read_text())
    image_data.write_text(json.dumps(infos[:3]))
    _assert_rejected(tmp_path, h5, image_data,
                     r"image_data\.json: 3 images after skipping SGB's 0 \(corrupted or "
                     r"missing\), but .*hand\.h5 dataset 'split' has 4: h5 image index 3 has "
                     r"no entry")
    # A corrupted id does not count: four entries of which one is SGB's 1722 are three.
    image_data.write_text(json.dumps(infos[:3] + [{"image_id": 1722, "width": 5, "height": 5}]))
    _assert_rejected(tmp_path, h5, image_data, r"3 images after skipping SGB's 1 .* h5 image "
                                               r"index 3 has no entry")
    image_data.write_text(json.dumps(infos + [{"image_id": 7, "width": 5, "height": 5}]))
    _assert_rejected(tmp_path, h5, image_data, r"5 images after .* entry index 4 onwards has no "
                                               r"h5 row")


def test_other_layout_errors(tmp_path):
    images, split, sizes = _good(tmp_path)
    h5, image_data = _hand_files(tmp_path, images, split, sizes,
                                 override={"img_to_last_box": np.array([2, 5, 8], np.int32)})
    _assert_rejected(tmp_path, h5, image_data,
                     r"dataset 'img_to_last_box': expected shape \(4,\), got \(3,\)")
    h5, image_data = _hand_files(tmp_path, images, split, sizes,
                                 override={"img_to_last_box": np.array([2, 5, 8, 12], np.int32)})
    _assert_rejected(tmp_path, h5, image_data,
                     r"dataset 'img_to_last_box' index 3: box range \[9, 12\] .* leaves the 12 "
                     r"rows of 'labels'")
    bad = [dict(images[0], labels=[1, 151, 3])] + images[1:]
    h5, image_data = _hand_files(tmp_path, bad, split, sizes)
    _assert_rejected(tmp_path, h5, image_data,
                     r"dataset 'labels' index 1: expected a class in 1\.\.150 .* got 151")
    bad = [dict(images[0], rels=[[0, 1, 0]])] + images[1:]
    h5, image_data = _hand_files(tmp_path, bad, split, sizes)
    _assert_rejected(tmp_path, h5, image_data,
                     r"dataset 'predicates' index 0: expected a predicate in 1\.\.50 .* got 0")
    bad = [dict(images[0], boxes=[_square(10, 10, 0, 4)] + images[0]["boxes"][1:])] + images[1:]
    h5, image_data = _hand_files(tmp_path, bad, split, sizes)
    _assert_rejected(tmp_path, h5, image_data,
                     r"dataset 'boxes_1024' index 0: expected a centre >= 0 and a width, "
                     r"height > 0 .* got \[10, 10, 0, 4\]")
    (tmp_path / "not.h5").write_text("hello")
    _assert_rejected(tmp_path, tmp_path / "not.h5", image_data, r"not\.h5: not a readable HDF5")
    with pytest.raises(FileNotFoundError, match="SGB h5 file not found: .*nothere.h5"):
        convert_sgb(tmp_path / "nothere.h5", DICTS, image_data, tmp_path / "out")


def _tool():
    spec = importlib.util.spec_from_file_location("aehg_tool_convert_sgb",
                                                  ROOT / "tools" / "convert_sgb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_sgb_tool(tmp_path, capsys):
    images, split, sizes = _good(tmp_path)
    h5, image_data = _hand_files(tmp_path, images, split, sizes)
    tool = _tool()
    out = tmp_path / "out"
    assert tool.main(["--h5", str(h5), "--dicts", str(DICTS), "--image-data", str(image_data),
                      "--output", str(out), "--num-val", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["train_images"], report["val_images"], report["test_images"]) == (1, 1, 2)
    assert sorted(p.name for p in out.iterdir()) == ["test.json", "train.json",
                                                     "train_triplets.json", "val.json"]
    split[0] = 1
    bad, _ = _hand_files(tmp_path, images, split, sizes)
    assert tool.main(["--h5", str(bad), "--dicts", str(DICTS), "--image-data",
                      str(image_data), "--output", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dataset 'split' index 0" in err
    assert not (tmp_path / "out2").exists()
