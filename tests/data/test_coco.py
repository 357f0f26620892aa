"""COCO keypoint dataset on the real sample (tests/data/coco_kp_ccby, see its ATTRIBUTION.md)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage

from aehg.config import AugmentConfig
from aehg.data.coco import (
    COCO_FLIP_MAP,
    COCO_OKS_SIGMAS,
    CocoKeypointDataset,
    DataFormatError,
    UnreadableImageError,
    derive_flip_map,
)
from aehg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AffineParams,
    apply_affine,
    invert_affine,
    random_affine_params,
)

SAMPLE = Path(__file__).parent / "coco_kp_ccby"
JSON = SAMPLE / "person_keypoints_ccby.json"
IMAGES = SAMPLE / "images"


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(JSON.read_text())


@pytest.fixture(scope="module")
def ds() -> CocoKeypointDataset:
    # Validation mode: augmentation only when a test passes explicit params (no colour jitter).
    return CocoKeypointDataset(JSON, IMAGES, train=False, input_size=256, output_size=64)


def _original_keypoints(raw: dict, ann_ids: list[int]) -> np.ndarray:
    by_id = {a["id"]: a for a in raw["annotations"]}
    return np.array([by_id[i]["keypoints"] for i in ann_ids], dtype=float).reshape(
        len(ann_ids), 17, 3)


def test_metadata_from_the_json(ds):
    assert len(ds) == 17 and ds.num_parts == 17
    assert ds.part_names[1] == "left_eye" and ds.skeleton[0] == (15, 13)
    np.testing.assert_array_equal(ds.flip_map, COCO_FLIP_MAP)
    np.testing.assert_allclose(ds.oks_sigmas, COCO_OKS_SIGMAS)
    assert derive_flip_map(ds.part_names) == list(COCO_FLIP_MAP)
    assert ds.coco.getImgIds() and len(ds.coco.getAnnIds()) == 89


def test_sample_layout(ds):
    s = ds[0]
    assert s["image"].shape == (3, 256, 256) and s["image"].dtype.is_floating_point
    assert s["heatmaps"].shape == (17, 64, 64) and s["mask"].shape == (64, 64)
    assert s["parts"].shape == (30, 17, 2)
    meta = s["meta"]
    assert set(meta) >= {"image_id", "file_name", "orig_size", "input_transform", "transform"}
    assert meta["input_transform"].shape == (2, 3) and meta["transform"].shape == (2, 3)


@pytest.mark.parametrize("index", [2, 6, 10])
def test_transform_matches_the_pixels(ds, index):
    """The recorded input transform is the one the image was warped with (bilinear reference)."""
    params = AffineParams(rotation=17.0, scale=1.1, shift=(0.05, -0.03), flip=True)
    s = ds.get(index, params)
    meta = s["meta"]
    image = cv2.imread(str(IMAGES / meta["file_name"]))[..., ::-1].astype(np.float64) / 255
    net = s["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    inv = invert_affine(meta["input_transform"])
    h, w = meta["orig_size"]
    rng = np.random.default_rng(index)
    checked = 0
    for x, y in rng.integers(0, 256, size=(200, 2)):
        ox, oy = apply_affine(np.array([x, y], dtype=float), inv)
        x0, y0 = int(np.floor(ox)), int(np.floor(oy))
        if not (0 <= x0 < w - 1 and 0 <= y0 < h - 1):
            continue
        fx, fy = ox - x0, oy - y0
        ref = ((1 - fx) * (1 - fy) * image[y0, x0] + fx * (1 - fy) * image[y0, x0 + 1]
               + (1 - fx) * fy * image[y0 + 1, x0] + fx * fy * image[y0 + 1, x0 + 1])
        np.testing.assert_allclose(net[y, x], ref, atol=2.5 / 255)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("seed", range(4))
def test_heatmap_peaks_at_transformed_keypoints(ds, raw, seed):
    rng = np.random.default_rng(seed)
    cfg = AugmentConfig(rotation=30, scale_min=0.75, scale_max=1.25, translate=0.2,
                        flip_prob=0.5)
    checked = 0
    for index in range(len(ds)):
        params = random_affine_params(rng, cfg)
        s = ds.get(index, params)
        meta = s["meta"]
        orig = _original_keypoints(raw, meta["ann_ids"])
        xy = apply_affine(orig[..., :2], meta["transform"])
        if params.flip:
            xy, vis = xy[:, ds.flip_map], orig[:, ds.flip_map, 2]
        else:
            vis = orig[..., 2]
        heat = s["heatmaps"].numpy()
        for n, c in zip(*np.nonzero(vis > 0), strict=True):
            x, y = xy[n, c]
            ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            if not (0 <= ix < 64 and 0 <= iy < 64):
                continue
            win = heat[c, max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2]
            assert win.max() == pytest.approx(1.0), (meta["image_id"], n, c)
            checked += 1
        # Every peak of value 1 belongs to some visible keypoint (no stray peaks).
        cs, ys, xs = np.nonzero(heat == 1.0)
        for c, y, x in zip(cs, ys, xs, strict=True):
            d = np.abs(xy[:, c] - [x, y]).max(axis=1)
            assert ((d <= 1.0) & (vis[:, c] > 0)).any()
    assert checked > 150


@pytest.mark.parametrize("seed", range(3))
def test_inverse_transform_recovers_original_keypoints(ds, raw, seed):
    rng = np.random.default_rng(100 + seed)
    cfg = AugmentConfig(flip_prob=0.5)
    for index in range(0, len(ds), 3):
        params = random_affine_params(rng, cfg)
        s = ds.get(index, params)
        meta = s["meta"]
        kps = meta["keypoints"]
        back = apply_affine(kps[..., :2], invert_affine(meta["transform"]))
        if meta["flipped"]:
            # flip_map is an involution: undo the part swap.
            back, vis = back[:, ds.flip_map], kps[:, ds.flip_map, 2]
        else:
            vis = kps[..., 2]
        orig = _original_keypoints(raw, meta["ann_ids"])
        np.testing.assert_array_equal(vis, orig[..., 2])
        labelled = orig[..., 2] > 0
        assert np.abs(back[labelled] - orig[..., :2][labelled]).max() < 1e-3


def test_flip_swaps_left_and_right(ds):
    names = ds.part_names
    base = AffineParams(rotation=-8.0, scale=0.9, shift=(0.02, 0.04))
    flip = AffineParams(rotation=-8.0, scale=0.9, shift=(0.02, 0.04), flip=True)
    a, b = ds.get(6, base), ds.get(6, flip)
    ka, kb = a["meta"]["keypoints"], b["meta"]["keypoints"]
    for side, other in (("left_", "right_"), ("right_", "left_")):
        for i, n in enumerate(names):
            if n.startswith(side):
                j = names.index(other + n[len(side):])
                np.testing.assert_allclose(kb[:, i, 0], 63 - ka[:, j, 0], atol=1e-9)
                np.testing.assert_allclose(kb[:, i, 1], ka[:, j, 1], atol=1e-9)
                np.testing.assert_array_equal(kb[:, i, 2], ka[:, j, 2])
    nose = names.index("nose")
    np.testing.assert_allclose(kb[:, nose, 0], 63 - ka[:, nose, 0], atol=1e-9)
    # The pixels are mirrored too.
    # (up to OpenCV's fixed-point interpolation: a grey level or two)
    np.testing.assert_allclose(b["image"].numpy(), a["image"].numpy()[..., ::-1],
                               atol=2.5 / 255 / 0.224)


@pytest.mark.parametrize("image_id", [129648, 174375, 433998])
def test_crowds_and_people_without_keypoints_are_masked(raw, image_id):
    ds = CocoKeypointDataset(JSON, IMAGES, train=False, input_size=512, output_size=128)
    s = ds.get(ds.ids.index(image_id))
    mask = s["mask"].numpy()
    info = next(im for im in raw["images"] if im["id"] == image_id)
    h, w = info["height"], info["width"]
    ignore = np.zeros((h, w), dtype=bool)
    n_ignored = 0
    for a in raw["annotations"]:
        if a["image_id"] != image_id or not (a["iscrowd"] or a["num_keypoints"] == 0):
            continue
        seg = a["segmentation"]
        rle = mask_utils.frPyObjects(seg, h, w)
        m = mask_utils.decode(rle)
        ignore |= (m if m.ndim == 2 else m.max(axis=2)).astype(bool)
        n_ignored += 1
    assert n_ignored >= 2
    # Expected mask at output pixels: look each pixel centre up in the original-size region.
    inv = invert_affine(s["meta"]["transform"])
    ys, xs = np.mgrid[0:128, 0:128]
    ox, oy = apply_affine(np.stack([xs, ys], -1).astype(float), inv).transpose(2, 0, 1)
    ix, iy = np.floor(ox + 0.5).astype(int), np.floor(oy + 0.5).astype(int)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)

    def sample(region: np.ndarray) -> np.ndarray:
        out = np.zeros((128, 128), dtype=bool)
        out[inside] = region[iy[inside], ix[inside]]
        return out

    expected = sample(ignore)
    assert expected.sum() > 20
    # Slack of one pixel at either resolution for the boundary (bilinear warp vs nearest).
    core = ndimage.binary_erosion(sample(ndimage.binary_erosion(ignore)))
    halo = ndimage.binary_dilation(sample(ndimage.binary_dilation(ignore)))
    assert (mask[core] == 0).all()
    assert (mask[~halo] == 1).all()


def test_train_mode_filters_empty_images_and_augments(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["images"].append({"id": 1, "file_name": "000000000785.jpg", "width": 640,
                           "height": 425})
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(data))
    train = CocoKeypointDataset(path, IMAGES, train=True, input_size=128, output_size=32,
                                filter_empty=True, seed=3)
    val = CocoKeypointDataset(path, IMAGES, train=False, input_size=128, output_size=32)
    assert 1 not in train.ids and 1 in val.ids and len(val) == len(train) + 1
    # Augmentation is a function of (seed, epoch, index): repeatable within an epoch, new in
    # the next one.
    a, b = train[0], train[0]
    assert np.array_equal(a["meta"]["transform"], b["meta"]["transform"])
    assert torch.equal(a["image"], b["image"])
    train.set_epoch(1)
    c = train[0]
    assert not np.allclose(a["meta"]["transform"], c["meta"]["transform"])
    assert set(train.running_stats) >= {"instances_dropped", "parts_outside", "links_dropped",
                                        "instances", "parts", "links"}


def test_dataset_stats_count_overflow(tmp_path):
    ds = CocoKeypointDataset(JSON, IMAGES, train=False, input_size=128, output_size=32,
                             max_instances=2)
    stats = ds.stats
    # Images with more than 2 people with keypoints: 129648 (9), 790/174375/183709/256353 (4),
    # 433998 (3) → 7 + 4 * 2 + 1 = 16 people without a row.
    assert stats["instances_dropped"] == 16
    assert stats["images"] == 17 and stats["skipped_images"] == 0
    # 44 people with keypoints (1+2+4+2+1+2+1+4+1+1+2+2+1+3+4+4+9 over the 17 images) and 441
    # visible keypoints, all inside their image, hence inside the map at validation geometry.
    assert stats == {"instances_dropped": 16, "parts_outside": 0, "links_dropped": 0,
                     "instances": 44, "parts": 441, "links": 0, "images": 17,
                     "skipped_images": 0}


# --------------------------------------------------------------------------- bad input


def _write(tmp_path: Path, data: dict, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("field", ["images", "annotations", "categories"])
def test_missing_top_level_field(tmp_path, raw, field):
    data = copy.deepcopy(raw)
    del data[field]
    path = _write(tmp_path, data)
    with pytest.raises(DataFormatError, match=rf"bad\.json.*missing field '{field}'"):
        CocoKeypointDataset(path, IMAGES)


def test_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(DataFormatError, match=r"bad\.json: not valid JSON"):
        CocoKeypointDataset(path, IMAGES)


def test_keypoints_of_wrong_length(tmp_path, raw):
    data = copy.deepcopy(raw)
    ann = next(a for a in data["annotations"] if not a["iscrowd"])
    ann["keypoints"] = ann["keypoints"][:-3]
    path = _write(tmp_path, data)
    with pytest.raises(DataFormatError, match=rf"bad\.json: annotation id {ann['id']}: field "
                                              r"'keypoints' has 48 values, expected 51"):
        CocoKeypointDataset(path, IMAGES)


def test_annotation_of_missing_image(tmp_path, raw):
    data = copy.deepcopy(raw)
    ann = data["annotations"][3]
    ann["image_id"] = 424242
    path = _write(tmp_path, data)
    with pytest.raises(DataFormatError, match=rf"annotation id {ann['id']}: field 'image_id' "
                                              r"names missing image 424242"):
        CocoKeypointDataset(path, IMAGES)


def _one_image(raw: dict, file_name: str) -> dict:
    data = copy.deepcopy(raw)
    data["images"] = [im for im in data["images"] if im["id"] == 785]
    data["images"][0]["file_name"] = file_name
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 785]
    return data


def test_missing_image_file(tmp_path, raw):
    path = _write(tmp_path, _one_image(raw, "nowhere.jpg"))
    ds = CocoKeypointDataset(path, IMAGES)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.jpg \(image id 785"):
        ds[0]


def test_unreadable_image(tmp_path, raw):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    path = _write(tmp_path, _one_image(raw, "broken.jpg"))
    ds = CocoKeypointDataset(path, tmp_path)
    with pytest.raises(UnreadableImageError, match=r"broken\.jpg \(image id 785"):
        ds[0]


def test_skip_unreadable_counts_and_logs(tmp_path, raw, caplog):
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    (tmp_path / "000000000790.jpg").write_bytes((IMAGES / "000000000790.jpg").read_bytes())
    data = copy.deepcopy(raw)
    keep = {785: "broken.jpg", 790: "000000000790.jpg", 160012: "missing.jpg"}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    for im in data["images"]:
        im["file_name"] = keep[im["id"]]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = _write(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="aehg.data.coco"):
        ds = CocoKeypointDataset(path, tmp_path, skip_unreadable=True, input_size=128,
                                 output_size=32)
        assert len(ds) == 2                       # the missing file is dropped at once
        s = ds[0]                                 # the broken one is replaced by the next image
    assert s["meta"]["image_id"] == 790
    assert ds.stats["skipped_images"] == 2 and set(ds.skipped) == {785, 160012}
    assert "missing.jpg" in caplog.text and "broken.jpg" in caplog.text
