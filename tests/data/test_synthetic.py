"""Synthetic datasets: determinism, COCO validity, pixel consistency and the generation cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from aehg.config import ConfigError, SyntheticConfig, config_from_dict
from aehg.data import build_dataset
from aehg.data.coco import CocoKeypointDataset
from aehg.data.synthetic import (
    _HAND_BGR,
    _OBJECT_COLORS,
    GRAPH_LINK_COLORS,
    GRAPH_OBJECT_CLASSES,
    MARKER_NAME,
    SyntheticFolderError,
    _figure_joints,
    ensure_synthetic,
    generate_split,
    pose_category,
)


def _pose_cfg(**kw) -> SyntheticConfig:
    return SyntheticConfig(**{"kind": "pose", "num_train": 12, "num_val": 3, "num_parts": 11,
                              "seed": 5, **kw})


def _graph_cfg(**kw) -> SyntheticConfig:
    return SyntheticConfig(**{"kind": "graph", "num_train": 12, "num_val": 3, "seed": 5, **kw})


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    ensure_synthetic(_pose_cfg(), root)
    return root


@pytest.fixture(scope="module")
def graph_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    ensure_synthetic(_graph_cfg(), root)
    return root


def test_deterministic_by_seed(tmp_path, pose_root):
    a = generate_split(_pose_cfg(), "train", tmp_path / "a", tmp_path / "a.json")
    b = json.loads((pose_root / "annotations" / "train.json").read_text())
    assert a == b
    for name in ("000000.png", "000007.png"):
        assert (tmp_path / "a" / name).read_bytes() == \
            (pose_root / "images" / "train" / name).read_bytes()
    c = generate_split(_pose_cfg(seed=6), "train", tmp_path / "c", tmp_path / "c.json")
    assert c["annotations"] != a["annotations"]
    # Train and val are different draws.
    val = json.loads((pose_root / "annotations" / "val.json").read_text())
    assert val["annotations"][0]["keypoints"] != a["annotations"][0]["keypoints"]


def test_pose_files_are_coco(pose_root):
    coco = COCO(str(pose_root / "annotations" / "train.json"))
    assert len(coco.getImgIds()) == 12
    cat = coco.loadCats(1)[0]
    assert cat["keypoints"][:7] == ["head", "neck", "pelvis", "left_hand", "right_hand",
                                    "left_foot", "right_foot"]
    assert len(cat["keypoints"]) == 11 and len(cat["oks_sigmas"]) == 11
    people = coco.loadAnns(coco.getAnnIds())
    per_image = np.bincount([a["image_id"] for a in people])
    assert per_image[1:].min() >= 1 and per_image.max() <= 6
    for a in people:
        kps = np.array(a["keypoints"]).reshape(11, 3)
        assert a["num_keypoints"] == int((kps[:, 2] > 0).sum())
        assert set(kps[:, 2]) <= {0, 1, 2}
        assert (kps[kps[:, 2] == 0, :2] == 0).all()
    # The dataset reader picks up the category's own sigmas and flip map.
    ds = CocoKeypointDataset(pose_root / "annotations" / "train.json", pose_root / "images" /
                             "train", input_size=128, output_size=32)
    np.testing.assert_allclose(ds.oks_sigmas, cat["oks_sigmas"])
    np.testing.assert_array_equal(ds.flip_map, cat["flip_map"])


@pytest.mark.parametrize("num_parts", [7, 9, 11, 13, 15])
def test_pose_category_flip_map_swaps_sides(num_parts):
    cat = pose_category(num_parts)
    names, fm = cat["keypoints"], cat["flip_map"]
    assert sorted(fm) == list(range(num_parts))
    for i, n in enumerate(names):
        other = names[fm[i]]
        if n.startswith("left_"):
            assert other == "right_" + n[5:]
        elif n.startswith("right_"):
            assert other == "left_" + n[6:]
        else:
            assert other == n
    # Skeleton is 1-based and connects every part.
    edges = np.array(cat["skeleton"])
    assert edges.min() >= 1 and set(edges.ravel()) == set(range(1, num_parts + 1))


def test_left_parts_on_the_left_side_of_the_body():
    # Flip consistency: in the figure frame every left joint is at x > 0 and every right one
    # at x < 0, so a mirrored figure really shows its parts on the other side.
    for seed in range(500):
        joints = _figure_joints(np.random.default_rng(seed))
        for name, (x, _) in joints.items():
            if name.startswith("left_"):
                assert x > 0, (seed, name)
            elif name.startswith("right_"):
                assert x < 0, (seed, name)


def test_visible_hands_are_drawn_in_hand_colour(pose_root):
    data = json.loads((pose_root / "annotations" / "train.json").read_text())
    names = data["categories"][0]["keypoints"]
    hands = [names.index("left_hand"), names.index("right_hand")]
    checked = 0
    for a in data["annotations"]:
        img = cv2.imread(str(pose_root / "images" / "train" /
                             f"{a['image_id'] - 1:06d}.png"))
        kps = np.array(a["keypoints"]).reshape(-1, 3)
        for c in hands:
            x, y, v = kps[c]
            if v == 2:
                px = img[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]
                assert np.abs(px.astype(int) - _HAND_BGR).max() <= 40
                checked += 1
    assert checked > 10


def test_graph_is_determined_by_the_pixels(graph_root):
    data = json.loads((graph_root / "annotations" / "train.json").read_text())
    coco = COCO(str(graph_root / "annotations" / "train.json"))
    assert [c["name"] for c in data["predicate_categories"]] == [
        f"{n}_arrow" for n in list(GRAPH_LINK_COLORS)[:3]]
    anns = {a["id"]: a for a in data["annotations"]}
    for a in anns.values():
        img = cv2.imread(str(graph_root / "images" / "train" / f"{a['image_id'] - 1:06d}.png"))
        x, y, w, h = a["bbox"]
        cx, cy = int(round(x + w / 2)), int(round(y + h / 2))
        shape, color = GRAPH_OBJECT_CLASSES[a["category_id"] - 1]
        assert coco.loadCats(a["category_id"])[0]["name"] == f"{color}_{shape}"
        assert np.abs(img[cy, cx].astype(int) - _OBJECT_COLORS[color]).max() <= 2
    assert data["relationships"]
    link_bgr = list(GRAPH_LINK_COLORS.values())
    for r in data["relationships"]:
        s, o = anns[r["subject_id"]], anns[r["object_id"]]
        assert s["image_id"] == o["image_id"] == r["image_id"] and s["id"] != o["id"]
        img = cv2.imread(str(graph_root / "images" / "train" / f"{r['image_id'] - 1:06d}.png"))
        cs = np.add(s["bbox"][:2], np.divide(s["bbox"][2:], 2))
        co = np.add(o["bbox"][:2], np.divide(o["bbox"][2:], 2))
        mx, my = np.floor((cs + co) / 2 + 0.5).astype(int)
        # The arrow of the link's colour passes through the midpoint (anti-aliased, 1 px).
        window = img[my - 1:my + 2, mx - 1:mx + 2].reshape(-1, 3).astype(int)
        want = np.array(link_bgr[r["predicate_id"] - 1])
        assert np.abs(window - want).max(axis=1).min() <= 90


def test_cache_skips_matching_spec_and_regenerates_otherwise(tmp_path):
    cfg = _graph_cfg(num_train=4, num_val=2)
    paths = ensure_synthetic(cfg, tmp_path)
    stamp = paths.train_json.stat().st_mtime_ns
    ensure_synthetic(cfg, tmp_path)
    assert paths.train_json.stat().st_mtime_ns == stamp
    # num_parts does not affect graph data: still cached.
    ensure_synthetic(_graph_cfg(num_train=4, num_val=2, num_parts=9), tmp_path)
    assert paths.train_json.stat().st_mtime_ns == stamp
    ensure_synthetic(_graph_cfg(num_train=5, num_val=2), tmp_path)
    assert len(json.loads(paths.train_json.read_text())["images"]) == 5
    assert len(list(paths.train_images.glob("*.png"))) == 5
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["num_train"] == 5 and spec["kind"] == "graph"


@pytest.mark.parametrize("field, value", [("num_parts", 8), ("num_parts", 17),
                                          ("num_object_classes", 13), ("num_link_classes", 7),
                                          ("max_objects", 1)])
def test_invalid_spec(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"data.synthetic.{field}"):
        ensure_synthetic(_pose_cfg(**{field: value}), tmp_path)


# --------------------------------------------------------------------------- a user's folder


def _user_folder(root):
    """A folder of a user's own data, in the layout synthetic generation writes."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "images" / "train" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nmy own picture")
    (root / "annotations" / "train.json").write_text('{"images": [], "mine": true}')
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tool(name):
    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"aehg_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_users_folder_is_never_written_into(tmp_path, capsys):
    root = tmp_path / "mydata"
    before = _user_folder(root)
    message = (f"{root}: refusing to write synthetic data into a folder aehg did not create "
               f"(it holds 2 entries: annotations, images; no .aehg-synthetic marker or aehg "
               f"spec.json); nothing was changed. Choose a new or empty folder for data.root / "
               f"--root")
    with pytest.raises(SyntheticFolderError) as info:
        ensure_synthetic(_pose_cfg(num_train=2, num_val=1), root)
    assert str(info.value) == message
    # The tool: one error line, exit code 2.
    code = _tool("make_synthetic").main(["--kind", "pose", "--root", str(root),
                                         "--num-train", "2", "--num-val", "1"])
    assert code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    # data.source: synthetic with data.root pointing there.
    cfg = config_from_dict({"model": {"num_classes": 7}, "data": {
        "source": "synthetic", "root": str(root), "synthetic": {"num_train": 2, "num_val": 1}}})
    with pytest.raises(SyntheticFolderError, match=rf"^{root}: refusing"):
        build_dataset(cfg, "train")
    # Byte-identical, and nothing added (not even the lock file).
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before


def test_a_file_as_root_is_refused(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("notes")
    with pytest.raises(SyntheticFolderError, match=rf"^{path}: synthetic data need a folder, "
                                                   r"but this is a file"):
        ensure_synthetic(_pose_cfg(), path)
    assert path.read_text() == "notes"


def test_empty_and_own_folders_are_written(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    paths = ensure_synthetic(_pose_cfg(num_train=2, num_val=1), root)
    assert (root / MARKER_NAME).is_file() and paths.train_json.is_file()
    # A regeneration (other spec) replaces only the images generation wrote.
    notes = paths.train_images / "notes.txt"
    notes.write_text("kept")
    ensure_synthetic(_pose_cfg(num_train=3, num_val=1), root)
    assert sorted(p.name for p in paths.train_images.iterdir()) == [
        "000000.png", "000001.png", "000002.png", "notes.txt"]
    assert notes.read_text() == "kept"


def test_a_folder_generated_before_the_marker_is_still_recognised(tmp_path):
    """Folders from before the marker (e.g. ``make demo`` caches) carry only aehg's spec.json."""
    cfg = _graph_cfg(num_train=3, num_val=1)
    paths = ensure_synthetic(cfg, tmp_path / "old")
    (tmp_path / "old" / MARKER_NAME).unlink()
    stamp = paths.train_json.stat().st_mtime_ns
    assert ensure_synthetic(cfg, tmp_path / "old") == paths          # cached: nothing written
    assert paths.train_json.stat().st_mtime_ns == stamp
    assert not (tmp_path / "old" / MARKER_NAME).exists()
    ensure_synthetic(_graph_cfg(num_train=4, num_val=1), tmp_path / "old")  # regenerated
    assert len(json.loads(paths.train_json.read_text())["images"]) == 4
    assert (tmp_path / "old" / MARKER_NAME).is_file()
    # A spec.json that is not aehg's does not count.
    other = tmp_path / "other"
    other.mkdir()
    (other / "spec.json").write_text('{"generator": "someone else"}')
    with pytest.raises(SyntheticFolderError, match=rf"^{other}: refusing .* \(it holds 1 "
                                                   r"entry: spec\.json;"):
        ensure_synthetic(cfg, other)
