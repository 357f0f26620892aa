"""Flip maps are never silent: the dataset derives them from part names, takes them from the
category or the argument, and refuses to flip a keypoint set it cannot swap; a training run
stores the swap it used in its config (and so in every checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from aehg.config import AugmentConfig, load_config
from aehg.data import CocoKeypointDataset, DataFormatError, data_info
from aehg.keypoints import COCO_FLIP_MAP

SAMPLE = Path(__file__).parent / "coco_kp_ccby"
JSON = SAMPLE / "person_keypoints_ccby.json"
IMAGES = SAMPLE / "images"


def _renamed(tmp_path, names, **category):
    data = json.loads(JSON.read_text())
    data["categories"][0]["keypoints"] = names
    data["categories"][0].update(category)
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(data))
    return path


def test_names_in_another_convention_give_the_coco_swap(tmp_path):
    names = ["Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow",
             "RElbow", "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle"]
    ds = CocoKeypointDataset(_renamed(tmp_path, names), IMAGES, train=True)
    np.testing.assert_array_equal(ds.flip_map, COCO_FLIP_MAP)
    assert ds.flip_map_source == "names"


def test_names_without_sides_refuse_flip_augmentation(tmp_path):
    names = [f"p{i}" for i in range(17)]
    path = _renamed(tmp_path, names)
    with pytest.raises(DataFormatError, match=rf"^{path}: category id 1: horizontal flips need "
                       r"the left/right swap of the parts, and the part names \['p0', .*set "
                       r"data.flip_map"):
        CocoKeypointDataset(path, IMAGES, train=True)
    # No flip happens: the dataset opens, and says it has no swap.
    ds = CocoKeypointDataset(path, IMAGES, train=True, augment=AugmentConfig(flip_prob=0.0))
    assert ds.flip_map_source is None
    val = CocoKeypointDataset(path, IMAGES, train=False)
    cfg = load_config(None, [f"data.root={tmp_path}", "data.val_json=renamed.json"])
    info = data_info(cfg, val)
    assert info.flip_map is None
    with pytest.raises(ValueError, match=r"^eval.flip_test: horizontal flips need"):
        info.require_flip_map("eval.flip_test")
    # An explicit swap (the argument, or the category's field) is taken as it is.
    explicit = list(COCO_FLIP_MAP)
    ds = CocoKeypointDataset(path, IMAGES, train=True, flip_map=explicit)
    assert ds.flip_map_source == "argument" and ds.flip_map.tolist() == explicit
    ds = CocoKeypointDataset(_renamed(tmp_path, names, flip_map=explicit), IMAGES, train=True)
    assert ds.flip_map_source == "category" and ds.flip_map.tolist() == explicit


def test_training_stores_the_flip_map_in_its_config(tmp_path):
    from aehg.engine import train

    cfg = load_config(Path(__file__).parents[2] / "configs" / "demo_pose.yaml",
                      [f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
                       "train.max_steps=1", "train.batch_size=2", "data.num_workers=0",
                       "data.synthetic.num_train=4", "data.synthetic.num_val=2",
                       "model.channels=16", "model.num_stacks=1", "model.depth=2",
                       "data.input_size=64", "data.output_size=16",
                       "data.synthetic.image_size=64"])
    assert cfg.data.flip_map is None
    train(cfg, validate=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    category = json.loads((tmp_path / "data" / "annotations" / "train.json").read_text())
    expected = category["categories"][0]["flip_map"]
    assert saved["data"]["flip_map"] == expected and expected != sorted(expected)
