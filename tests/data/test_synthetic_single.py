"""The synthetic single-person set: one centred stick figure with the 16 MPII joints per image,
written as PNGs and the hourglass code's h5."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from aehg.config import SyntheticConfig, load_config
from aehg.data import build_dataset
from aehg.data.mpii import MpiiDataset, read_mpii_h5
from aehg.data.synthetic import draw_single_image, ensure_synthetic


def test_files_and_determinism(tmp_path):
    cfg = SyntheticConfig(kind="single", num_train=3, num_val=2, image_size=64, seed=4)
    paths = ensure_synthetic(cfg, tmp_path / "a")
    assert paths.train_json == tmp_path / "a" / "annotations" / "train.h5"
    train = read_mpii_h5(paths.train_json)
    assert train.imgname == ["000000.png", "000001.png", "000002.png"]
    assert len(read_mpii_h5(paths.val_json)) == 2
    np.testing.assert_allclose(train.normalize, 20 * train.scale)
    assert train.annotated.all() and (train.visible == 1).all()
    spec = json.loads((tmp_path / "a" / "spec.json").read_text())
    assert spec["kind"] == "single" and "num_parts" not in spec and "max_people" not in spec
    again = read_mpii_h5(ensure_synthetic(cfg, tmp_path / "b").train_json)
    np.testing.assert_array_equal(again.part, train.part)
    first = paths.images("train") / "000001.png"
    assert first.read_bytes() == (tmp_path / "b" / "images" / "train" / "000001.png").read_bytes()


def test_figure_is_centred_and_cropped_with_margin():
    for seed in range(5):
        image, person = draw_single_image(np.random.default_rng(seed), 128)
        part = person["part"]
        lo, hi = part.min(axis=0), part.max(axis=0)
        np.testing.assert_allclose(person["center"], (lo + hi) / 2)
        assert np.abs(person["center"] - 63.5).max() <= 0.03 * 128 + 1e-9
        assert 200 * person["scale"] == pytest.approx((hi - lo).max() * 1.25, rel=1e-12)
        # Thorax (the neck joint), upper neck and head top lie on the neck line, where it
        # enters and leaves the head disc: 0.055 and 0.205 of the figure height from the thorax.
        up, top = part[8] - part[7], part[9] - part[7]
        assert abs(up[0] * top[1] - up[1] * top[0]) < 1e-9
        assert np.linalg.norm(top) / np.linalg.norm(up) == pytest.approx(0.205 / 0.055)
        # Hands are white, feet yellow.
        for j, colour in ((10, (255, 255, 255)), (5, (0, 230, 255))):
            x, y = np.floor(part[j] + 0.5).astype(int)
            assert tuple(int(v) for v in image[y, x]) == colour, (seed, j)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert cv2.imencode(".png", image)[0]


def test_single_pose_config_builds_the_dataset(tmp_path):
    cfg = load_config(None, [
        "data.kind=single_pose", "data.source=synthetic", "data.synthetic.kind=single",
        f"data.root={tmp_path}", "data.synthetic.num_train=4", "data.synthetic.num_val=2",
        "data.synthetic.image_size=64", "data.input_size=64", "data.output_size=16",
        "model.num_classes=16", "model.embedding_dim=0"])
    train = build_dataset(cfg, "train")
    assert isinstance(train, MpiiDataset) and len(train) == 4
    sample = train[0]
    assert sample["image"].shape == (3, 64, 64) and sample["heatmaps"].shape == (16, 16, 16)
    assert len(build_dataset(cfg, "val")) == 2
