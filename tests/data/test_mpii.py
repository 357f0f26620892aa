"""MPII: the hourglass code's h5, the official .mat (a tiny one in its structure), the person
crop, and the single-person dataset behind ``data.kind: single_pose``."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from aehg.config import ConfigError, load_config
from aehg.data import build_dataset
from aehg.data.coco import DataFormatError
from aehg.data.mpii import (
    MPII_FLIP_MAP,
    MpiiAnnotations,
    MpiiDataset,
    load_mpii,
    read_mpii_h5,
    read_mpii_mat,
    write_mpii_h5,
)
from aehg.data.transforms import AffineParams, apply_affine, crop_matrix

SAMPLE = Path(__file__).resolve().parent / "mpii_valid_sample" / "valid_first500.h5"


def _structs(records, fields):
    """A 1×N MATLAB struct array (absent fields empty, as MATLAB stores them)."""
    arr = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, r in enumerate(records):
        for f in fields:
            arr[0, i][f] = r.get(f, np.zeros((0, 0)))
    return arr


POINT = ["id", "x", "y", "is_visible"]
RECT = ["x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"]


def _write_mat(path, point_id=13):
    """Three images: a.jpg (training; person 1 with four joints, person 2 without centre or
    scale), b.jpg (test: centre and scale only), c.jpg (training, one joint)."""
    points = _structs([dict(id=0, x=120.7, y=300.2, is_visible=1),
                       dict(id=9, x=110, y=150, is_visible="0"),      # a string, as in MPII
                       dict(id=10, x=90, y=220, is_visible=np.zeros((0, 0))),  # empty: visible
                       dict(id=point_id, x=130, y=180, is_visible=0)], POINT)
    rects_a = _structs([dict(x1=100, y1=140, x2=130, y2=180, annopoints={"point": points},
                             scale=2.0, objpos={"x": 115, "y": 230}),
                        dict(x1=1, y1=2, x2=3, y2=4, annopoints={"point": _structs(
                            [dict(id=1, x=5, y=6, is_visible=1)], POINT)})], RECT)
    rects_b = _structs([dict(scale=1.5, objpos={"x": 50, "y": 60})], ["scale", "objpos"])
    rects_c = _structs([dict(x1=10, y1=10, x2=16, y2=18, scale=1.0, objpos={"x": 40, "y": 50},
                             annopoints={"point": _structs(
                                 [dict(id=15, x=40, y=41, is_visible=1)], POINT)})], RECT)
    annolist = _structs([dict(image={"name": "a.jpg"}, annorect=rects_a),
                         dict(image={"name": "b.jpg"}, annorect=rects_b),
                         dict(image={"name": "c.jpg"}, annorect=rects_c)],
                        ["image", "annorect", "frame_sec", "vididx"])
    single = np.empty((3, 1), dtype=object)
    single[0, 0], single[1, 0], single[2, 0] = np.array([[1]]), np.array([[1]]), np.zeros((0, 0))
    scipy.io.savemat(path, {"RELEASE": {"annolist": annolist, "img_train": np.array([[1, 0, 1]]),
                                        "single_person": single, "version": "12"}})
    return path


# --------------------------------------------------------------------------- readers


def test_hourglass_h5_sample():
    ann = read_mpii_h5(SAMPLE)
    assert len(ann) == 500
    assert ann.imgname[:2] == ["005808361.jpg", "052475643.jpg"]
    np.testing.assert_allclose(ann.center[0], [966.0, 410.7773184])
    assert ann.scale[0] == pytest.approx(5.898109866728492, abs=1e-12)
    assert ann.normalize[0] == pytest.approx(117.96219733456985, abs=1e-12)
    assert ann.part[0, 9].tolist() == [962.0, 80.0]  # head top of the first person
    assert ann.part[2, 0].tolist() == [0.0, 0.0] and not ann.annotated[2, 0]
    assert ann.index[:3].tolist() == [6, 17, 27] and ann.person[:3].tolist() == [0, 0, 0]
    assert int(ann.annotated.sum()) == 7441


def test_h5_without_a_dataset_or_with_17_joints_is_refused(tmp_path):
    base = read_mpii_h5(SAMPLE).subset(np.arange(3))
    path = write_mpii_h5(tmp_path / "ok.h5", base)
    with h5py.File(path, "a") as f:
        del f["normalize"]
    with pytest.raises(DataFormatError) as err:
        read_mpii_h5(path)
    assert str(err.value) == (
        f"{path}: missing dataset 'normalize' (the hourglass code's MPII annotation h5 has "
        f"imgname, center, scale, part, visible, normalize; found center, imgname, index, "
        f"part, person, scale, visible)")
    path = write_mpii_h5(tmp_path / "coco.h5", base)
    with h5py.File(path, "a") as f:
        del f["part"]
        f["part"] = np.zeros((3, 17, 2))
    with pytest.raises(DataFormatError) as err:
        read_mpii_h5(path)
    assert str(err.value) == (
        f"{path}: dataset 'part': expected shape (N, 16, 2) with N = 3 people (the 16 MPII "
        f"joints: r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle, pelvis, thorax, upper_neck, "
        f"head_top, r_wrist, r_elbow, r_shoulder, l_shoulder, l_elbow, l_wrist), got (3, 17, 2)")
    bad = tmp_path / "text.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataFormatError, match=re.escape(f"{bad}: not an HDF5 file (")):
        read_mpii_h5(bad)


def test_official_mat_is_converted_as_the_hourglass_code_does(tmp_path):
    ann, train = read_mpii_mat(_write_mat(tmp_path / "mpii_human_pose_v1_u12_1.mat"))
    # a.jpg person 2 has no centre and scale: left out.
    assert ann.imgname == ["a.jpg", "b.jpg", "c.jpg"]
    assert train.tolist() == [True, False, True]
    assert ann.index.tolist() == [0, 1, 2] and ann.person.tolist() == [0, 0, 0]
    assert ann.single.tolist() == [True, True, False]
    # Centre 15·scale lower, scale × 1.25; joints as integers; normaliser 0.6 · head diagonal.
    assert ann.center.tolist() == [[115.0, 260.0], [50.0, 82.5], [40.0, 65.0]]
    assert ann.scale.tolist() == [2.5, 1.875, 1.25]
    assert ann.normalize[0] == 0.6 * 50 and ann.normalize[1] == -1.0
    assert ann.normalize[2] == pytest.approx(0.6 * 10)
    assert ann.part[0, [0, 9, 10, 13]].tolist() == [[120, 300], [110, 150], [90, 220], [130, 180]]
    assert ann.visible[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert int(ann.annotated[0].sum()) == 4 and not ann.annotated[1].any()


def test_mat_splits_and_the_validation_people(tmp_path):
    path = _write_mat(tmp_path / "mpii.mat")
    assert load_mpii(path, "train").imgname == ["a.jpg", "c.jpg"]
    assert load_mpii(path, "test").imgname == ["b.jpg"]
    valid = MpiiAnnotations(tmp_path / "valid.h5", ["c.jpg"], np.zeros((1, 2)), np.ones(1),
                            np.zeros((1, 16, 2)), np.zeros((1, 16)), np.ones(1),
                            np.array([2]), np.array([0]))
    assert load_mpii(path, "train", exclude=valid).imgname == ["a.jpg"]
    with pytest.raises(ValueError, match=re.escape(
            f"{SAMPLE}: an h5 annotation file is one split already")):
        load_mpii(SAMPLE, "train")
    with pytest.raises(ValueError, match="expected MPII annotations as the hourglass code's .h5 "
                                         "or the official .mat, got a .json file"):
        load_mpii(tmp_path / "x.json")


def test_broken_mat_files_name_the_field(tmp_path):
    path = _write_mat(tmp_path / "bad_id.mat", point_id=16)
    with pytest.raises(DataFormatError) as err:
        read_mpii_mat(path)
    assert str(err.value) == (f"{path}: annolist(1).annorect(1).annopoints.point(4).id: expected a "
                              f"joint id 0…15 (the 16 MPII joints), got 16")
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"annolist": np.zeros(3)})
    with pytest.raises(DataFormatError) as err:
        read_mpii_mat(other)
    assert str(err.value) == (f"{other}: missing variable 'RELEASE' (the MPII annotation struct; "
                              f"found annolist)")
    no_list = tmp_path / "no_list.mat"
    scipy.io.savemat(no_list, {"RELEASE": {"img_train": np.array([[1, 0]])}})
    with pytest.raises(DataFormatError) as err:
        read_mpii_mat(no_list)
    assert str(err.value) == f"{no_list}: RELEASE: missing field 'annolist'"
    text = tmp_path / "notes.mat"
    text.write_text("hello")
    with pytest.raises(DataFormatError, match=re.escape(f"{text}: not a MATLAB .mat file (")):
        read_mpii_mat(text)


# --------------------------------------------------------------------------- dataset


def _tiny(tmp_path, n=2):
    """n pictures with one person each, and their h5."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    part = np.zeros((n, 16, 2))
    for i in range(n):
        cv2.imwrite(str(images / f"{i}.jpg"), rng.integers(0, 255, (200, 300, 3), np.uint8))
        part[i] = rng.uniform((105, 55), (195, 145), (16, 2))  # inside the 100 px crop
    part[:, 9] = 0.0  # head top not annotated
    ann = MpiiAnnotations(tmp_path / "annot" / "valid.h5", [f"{i}.jpg" for i in range(n)],
                          np.tile([[150.0, 100.0]], (n, 1)), np.full(n, 0.5), part,
                          np.ones((n, 16)), np.full(n, 10.0), np.arange(n), np.zeros(n, int))
    write_mpii_h5(ann.path, ann)
    return ann, images


def test_person_crop_and_targets(tmp_path):
    ann, images = _tiny(tmp_path)
    ds = MpiiDataset(read_mpii_h5(ann.path), images, input_size=64, output_size=16, sigma=1.0)
    sample = ds[1]
    meta = sample["meta"]
    # The 200·scale = 100 px square around the centre fills the 64 px input.
    assert apply_affine(np.array([150.0, 100.0]), meta["input_transform"]).tolist() == [31.5, 31.5]
    np.testing.assert_allclose(meta["input_transform"], crop_matrix((150, 100), 0.5, 64))
    xy = apply_affine(ann.part[1], meta["transform"])
    np.testing.assert_allclose(meta["keypoints"][0, :, :2], xy)
    heat = sample["heatmaps"].numpy()
    assert heat.shape == (16, 16, 16)
    for j in range(16):
        if j == 9:
            assert heat[j].max() == 0.0  # not annotated: no Gaussian
            continue
        iy, ix = np.unravel_index(heat[j].argmax(), heat[j].shape)
        assert (ix, iy) == tuple(np.floor(xy[j] + 0.5).astype(int)), j
        assert heat[j].max() == 1.0
    assert meta["stats"] == {"instances_dropped": 0, "parts_outside": 0, "links_dropped": 0,
                             "instances": 1, "parts": 15, "links": 0}
    assert ds.stats["parts"] == 30 and ds.stats["images"] == 2
    assert sample["parts"].shape == (1, 16, 2)


def test_flip_swaps_left_and_right(tmp_path):
    ann, images = _tiny(tmp_path)
    ds = MpiiDataset(read_mpii_h5(ann.path), images, input_size=64, output_size=16)
    plain = ds.get(0, AffineParams())["meta"]["keypoints"][0]
    flipped = ds.get(0, AffineParams(flip=True))["meta"]["keypoints"][0]
    for c in range(16):
        src = MPII_FLIP_MAP[c]
        assert flipped[c, 0] == pytest.approx(15 - plain[src, 0])  # x ↦ W − 1 − x
        assert flipped[c, 1] == pytest.approx(plain[src, 1])


def test_build_dataset_reads_mpii_sources(tmp_path):
    ann, images = _tiny(tmp_path)
    mat = _write_mat(tmp_path / "annot" / "mpii.mat")
    base = ["data.kind=single_pose", "data.source=mpii", f"data.root={tmp_path}",
            "data.val_json=annot/valid.h5", "data.val_images=images", "model.num_classes=16",
            "model.embedding_dim=0", "data.input_size=64", "data.output_size=16"]
    val = build_dataset(load_config(None, base), "val")
    assert isinstance(val, MpiiDataset) and len(val) == 2
    # The .mat trains on its training people minus those of valid.h5 (index, person).
    write_mpii_h5(ann.path, MpiiAnnotations(ann.path, ["c.jpg"], np.ones((1, 2)), np.ones(1),
                                            np.ones((1, 16, 2)), np.ones((1, 16)), np.ones(1),
                                            np.array([2]), np.array([0])))
    train = build_dataset(load_config(None, [*base, "data.train_json=annot/mpii.mat"]), "train")
    assert train.annotations.imgname == ["a.jpg"]
    with pytest.raises(ConfigError) as err:
        build_dataset(load_config(None, [*base, "data.val_json=annot/mpii.mat"]), "val")
    assert str(err.value) == (
        f"data.val_json: the MPII .mat ({mat}) has no validation split: give the hourglass "
        f"code's valid.h5 as data.val_json (its people are then left out of the .mat's "
        f"training people), got {mat}")
    with pytest.raises(ConfigError) as err:
        build_dataset(load_config(None, [*base, "model.num_classes=17"]), "val")
    assert str(err.value) == (f"model.num_classes: expected 16 (the MPII joints of "
                              f"{tmp_path / 'annot' / 'valid.h5'}), got 17")


def test_missing_image_names_file_and_row(tmp_path):
    ann, images = _tiny(tmp_path)
    (images / "1.jpg").unlink()
    ds = MpiiDataset(read_mpii_h5(ann.path), images)
    with pytest.raises(FileNotFoundError) as err:
        ds.try_get(1)
    assert str(err.value) == (f"image file not found: {images / '1.jpg'} (row 1 of "
                              f"{ann.path})")
    skipping = MpiiDataset(read_mpii_h5(ann.path), images, skip_unreadable=True)
    assert skipping.ids == [0] and list(skipping.skipped) == [1]


def test_config_rules_of_single_pose():
    with pytest.raises(ConfigError, match=re.escape(
            "model.embedding_dim: expected 0 for data.kind single_pose (one person per sample: "
            "heatmaps only), got 1")):
        load_config(None, ["data.kind=single_pose", "model.num_classes=16"])
    with pytest.raises(ConfigError, match=re.escape(
            "data.kind: expected 'single_pose' for data.source 'mpii' (one person per sample), "
            "got 'pose'")):
        load_config(None, ["data.source=mpii"])
    with pytest.raises(ConfigError, match=re.escape(
            "model.embedding_dim: expected at least 1 for data.kind 'pose'")):
        load_config(None, ["model.embedding_dim=0"])
    for name in ("mpii_hourglass.yaml", "mpii_hourglass_2stack.yaml"):
        cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / name)
        assert (cfg.data.kind, cfg.data.input_size, cfg.data.output_size) == ("single_pose",
                                                                               256, 64)
        assert (cfg.train.optimizer, cfg.train.lr) == ("rmsprop", 2.5e-4)
        assert cfg.model.num_stacks == (8 if "2stack" not in name else 2)
