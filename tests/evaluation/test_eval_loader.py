"""Evaluation through a DataLoader: worker processes build only the image and its transforms
(``CocoBase.eval_sample``), and the predictions and metrics are those of reading every training
sample in the main process, as evaluation did before."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aehg.config import config_from_dict, load_config
from aehg.data import CocoKeypointDataset, build_dataset
from aehg.data.info import data_info
from aehg.data.loader import collate
from aehg.evaluation import evaluate_model, score_predictions
from aehg.inference import predict_dataset
from aehg.inference.decode import decode_predictions
from aehg.inference.maps import forward_maps, maps_to_cpu
from aehg.models import build_model

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "coco_kp_ccby"
JSON = SAMPLE / "person_keypoints_ccby.json"
IMAGES = SAMPLE / "images"
SIZE, OUT = 128, 32
EVAL_META = ("image_id", "file_name", "orig_size", "input_transform", "transform", "flipped")


def _pose_cfg(workers: int):
    return config_from_dict({
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 17},
        "data": {"input_size": SIZE, "output_size": OUT, "num_workers": workers},
        "train": {"batch_size": 4},
        "eval": {"flip_test": True}})


def _graph_cfg(root: Path, workers: int):
    return config_from_dict({
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 3,
                  "num_link_classes": 2, "tag_per_class": False, "box_size": True,
                  "embedding_dim": 4, "heatmap_activation": "sigmoid"},
        "data": {"kind": "relations", "source": "synthetic", "root": str(root),
                 "input_size": 64, "output_size": 16, "num_workers": workers,
                 "synthetic": {"kind": "graph", "num_train": 1, "num_val": 5, "image_size": 64,
                               "num_object_classes": 3, "num_link_classes": 2}},
        "train": {"batch_size": 2}, "eval": {"detection_threshold": 0.0}})


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        # Louder heads: the random network then finds a few peaks above the threshold.
        for head in model.heads:
            head.weight.mul_(30.0)
    return model


def _reference(model, ds, cfg):
    """The former path: whole training samples (``try_get``) read in this process, in order,
    batch by batch, then the model and the decoder."""
    info = data_info(cfg, ds)
    flip_map = info.flip_map if cfg.eval.flip_test else None
    names = info.class_names if cfg.data.kind == "relations" else None
    b = cfg.train.batch_size
    preds = []
    with torch.no_grad():
        for start in range(0, len(ds), b):
            batch = collate([ds.try_get(i) for i in range(start, min(start + b, len(ds)))])
            maps = maps_to_cpu(forward_maps(model, batch["image"], cfg.eval.stacks,
                                            cfg.eval.flip_test, flip_map))
            preds += decode_predictions(maps, batch["meta"], cfg.eval, cfg.data.kind, names,
                                        info.predicate_names)
    return preds


def _assert_same(got, expected):
    assert [p.image_id for p in got] == [p.image_id for p in expected]
    for p, q in zip(got, expected, strict=True):
        assert (p.file_name, p.orig_size) == (q.file_name, q.orig_size)
        for name, value in vars(q.instances).items():
            other = getattr(p.instances, name)
            if value is None:
                assert other is None, name
            else:
                np.testing.assert_array_equal(other, value, err_msg=name)
        assert sorted(p.graph.edges(data="label", keys=True)) == \
            sorted(q.graph.edges(data="label", keys=True))


def _assert_eval_sample(ds, index):
    full, light = ds.try_get(index), ds.eval_sample(index)
    assert set(light) == {"image", "meta"}
    assert torch.equal(light["image"], full["image"])
    assert set(EVAL_META) <= set(light["meta"])
    for key in EVAL_META:
        np.testing.assert_array_equal(np.asarray(light["meta"][key], dtype=object),
                                      np.asarray(full["meta"][key], dtype=object), err_msg=key)


def test_eval_sample_is_the_sample_without_training_targets(tmp_path):
    pose = CocoKeypointDataset(JSON, IMAGES, input_size=SIZE, output_size=OUT)
    for i in (0, 5, 16):
        _assert_eval_sample(pose, i)
    # Only what evaluation reads: no per-sample statistics or transformed annotations.
    assert set(pose.eval_sample(0)["meta"]) == set(EVAL_META)
    graphs = build_dataset(_graph_cfg(tmp_path / "syn", 0), "val")
    for i in range(len(graphs)):
        _assert_eval_sample(graphs, i)
    # Single-person crops keep their own geometry (MpiiDataset).
    single = build_dataset(load_config(None, [
        "data.kind=single_pose", "data.source=synthetic", "data.synthetic.kind=single",
        f"data.root={tmp_path / 'single'}", "data.synthetic.num_train=1",
        "data.synthetic.num_val=2", "data.synthetic.image_size=64", "data.input_size=64",
        "data.output_size=16", "model.num_classes=16", "model.embedding_dim=0"]), "val")
    for i in range(len(single)):
        _assert_eval_sample(single, i)


@pytest.mark.parametrize("workers", [0, 2])
def test_pose_predictions_and_metrics_equal_the_main_process_path(workers):
    cfg = _pose_cfg(workers)
    ds = CocoKeypointDataset(JSON, IMAGES, input_size=SIZE, output_size=OUT)
    model = _model(cfg)
    expected = _reference(model, ds, cfg)
    assert sum(len(p.scores) for p in expected) > 0          # something to compare
    preds = predict_dataset(model, ds, cfg)
    _assert_same(preds, expected)
    metrics = evaluate_model(model, ds, cfg)
    assert metrics.pop("skipped_images") == 0
    assert metrics == score_predictions(expected, ds, cfg)


def test_multi_scale_path_with_workers_equals_without(tmp_path):
    ds = CocoKeypointDataset(JSON, IMAGES, input_size=SIZE, output_size=OUT)
    cfg0, cfg2 = _pose_cfg(0), _pose_cfg(2)
    for cfg in (cfg0, cfg2):
        cfg.eval.scales = [1.0, 0.5]
    model = _model(cfg0)
    without = predict_dataset(model, ds, cfg0)
    assert sum(len(p.scores) for p in without) > 0
    _assert_same(predict_dataset(model, ds, cfg2), without)


def test_relation_metrics_with_workers_equal_the_main_process_path(tmp_path):
    cfg0, cfg2 = _graph_cfg(tmp_path / "syn", 0), _graph_cfg(tmp_path / "syn", 2)
    ds = build_dataset(cfg0, "val")
    model = _model(cfg0)
    expected = _reference(model, ds, cfg0)
    assert sum(len(p.scores) for p in expected) > 0
    _assert_same(predict_dataset(model, ds, cfg2), expected)
    got = evaluate_model(model, ds, cfg2)
    assert got.pop("skipped_images") == 0
    assert got == score_predictions(expected, ds, cfg0)


@pytest.mark.parametrize("scales", [[1.0], [1.0, 0.5]])
def test_a_workers_read_error_is_raised_with_its_own_message(tmp_path, scales):
    images = tmp_path / "images"
    shutil.copytree(IMAGES, images)
    path = images / "000000000785.jpg"
    path.write_bytes(b"\xff\xd8 not a jpeg")
    ds = CocoKeypointDataset(JSON, images, input_size=SIZE, output_size=OUT)
    cfg = _pose_cfg(2)
    cfg.eval.scales = scales
    # Not the worker's "Caught … in DataLoader worker process" with its traceback.
    with pytest.raises(OSError, match=rf"^cannot decode image file {path} \(image id 785 in "
                                      rf"{JSON}\)$"):
        predict_dataset(_model(cfg), ds, cfg)
