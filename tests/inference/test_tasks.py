"""SGCls and PredCls end to end (docs/design.md §2 "Tasks"): train a few steps on the synthetic
scene graphs, predict with given boxes, evaluate; the known-object decoding against
hand-made maps; the errors for bad known objects and mismatched models."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aehg.config import ConfigError, config_to_dict, load_config
from aehg.data.loader import build_dataset
from aehg.decoding.objects import read_objects
from aehg.engine import train
from aehg.evaluation import evaluate_checkpoint
from aehg.inference import Predictor, config_from_checkpoint
from aehg.models import build_model

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.synthetic.num_train=24", "data.synthetic.num_val=3", "data.num_workers=0",
        "model.num_stacks=1", "model.channels=16", "model.depth=2", "train.batch_size=4",
        "train.max_steps=3", "train.epochs=1", "train.val_interval=1", "train.log_interval=1",
        "train.device=cpu", "eval.flip_test=false"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("graph_data")


def _cfg(data_root, out, task, *extra):
    return load_config(ROOT / "configs" / "demo_graph.yaml", [
        f"data.root={data_root}", f"train.output_dir={out}", f"data.task={task}", *TINY,
        *extra])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A few training steps per task: {task: (cfg, checkpoint path, validation metrics)}."""
    torch.set_num_threads(1)
    out = {}
    for name, task, extra in (("sgcls", "sgcls", []), ("predcls", "predcls", []),
                              ("sgcls-slots", "sgcls",
                               ["model.object_slots=3", "model.relation_slots=2"])):
        cfg = _cfg(data_root, tmp_path_factory.mktemp(task), task, *extra)
        summary = train(cfg)
        out[name] = (cfg, Path(cfg.train.output_dir) / "last.pt", summary["metrics"])
    return out


@pytest.mark.parametrize("name", ["sgcls", "predcls", "sgcls-slots"])
def test_prediction_nodes_are_the_given_boxes(trained, name):
    cfg, ckpt, metrics = trained[name]
    task = cfg.data.task
    # Validation ran on the task: the objects are the ground-truth boxes, so every one is
    # found for predcls (classes given too).
    assert "ngR@20" in metrics and "R@100" in metrics and "mR@20" in metrics
    if task == "predcls":
        assert metrics["object_recall"] == 1.0
    p = Predictor(None, ckpt, device="cpu")
    assert p.task == task and p.model.stem[0].in_channels == 3 + cfg.model.box_channels
    ds = build_dataset(cfg, "val")
    for i in range(len(ds)):
        img_id = ds.ids[i]
        boxes, labels = ds.boxes(img_id), ds.labels(img_id)
        pred = p.predict(ds.read_image(img_id), boxes=boxes, labels=labels)
        n = len(boxes)
        assert pred.graph.number_of_nodes() == n
        np.testing.assert_array_equal(pred.boxes, boxes.astype(np.float32))
        nodes = [pred.graph.nodes[k] for k in range(n)]
        np.testing.assert_allclose([d["box"] for d in nodes], boxes, atol=1e-4)
        if task == "predcls":
            np.testing.assert_array_equal(pred.labels, labels)
            np.testing.assert_array_equal(pred.scores, 1.0)
        else:
            assert ((pred.labels >= 0) & (pred.labels < cfg.model.num_classes)).all()
        assert all(u < n and v < n for u, v in pred.graph.edges())


def test_evaluation_names_the_task(trained, tmp_path, capsys):
    cfg, ckpt, _ = trained["predcls"]
    metrics = evaluate_checkpoint(cfg, ckpt, tmp_path / "eval", device="cpu", progress=False)
    printed = capsys.readouterr().out
    assert "task: predcls (boxes and classes given; relations predicted)" in printed
    assert metrics["object_recall"] == 1.0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["task"] == "predcls"


def test_multi_scale_evaluation_renders_the_boxes_per_scale(trained, tmp_path):
    cfg, ckpt, _ = trained["predcls"]
    cfg = copy.deepcopy(cfg)
    cfg.eval.scales = [1.0, 0.5]
    metrics = evaluate_checkpoint(cfg, ckpt, tmp_path / "eval", device="cpu", progress=False,
                                  verbose=False)
    assert metrics["object_recall"] == 1.0


def test_predictor_rejects_bad_known_objects(trained):
    cfg, ckpt, _ = trained["predcls"]
    p = Predictor(None, ckpt, device="cpu")
    img = np.zeros((100, 120, 3), np.uint8)
    good = np.array([[10.0, 10.0, 50.0, 40.0], [60.0, 20.0, 110.0, 90.0]])
    cases = [
        (dict(boxes=good + [0, 0, 15, 0], labels=[0, 1]),
         r"boxes\[1\]: expected a box inside the image \(0 <= x <= 120, 0 <= y <= 100\); the "
         r"box lies outside the image"),
        (dict(boxes=np.zeros((0, 4)), labels=[]), "boxes: expected at least one box"),
        (dict(boxes=good, labels=[0, 4]), r"labels\[1\]: expected a class in 0..3"),
        (dict(boxes=good), "labels: the model's data.task is 'predcls'"),
        (dict(), "boxes: the model's data.task is 'predcls': give the known objects"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            p.predict(img, **kwargs)
    with pytest.raises(ValueError, match=r"images\[1\]: boxes: expected at least one box"):
        p.predict_batch([img, img], boxes=[good, []], labels=[[0, 1], []])


def _sgdet_checkpoint(data_root, old=True):
    torch.manual_seed(0)
    cfg = _cfg(data_root, "unused", "sgdet")
    model = build_model(cfg.model)
    stored = config_to_dict(cfg)
    if old:  # a checkpoint written before data.task / model.box_channels existed
        del stored["model"]["box_channels"], stored["data"]["task"]
    return cfg, {"model": model.state_dict(), "config": stored}


def test_three_channel_checkpoint_still_loads(data_root):
    _, ckpt = _sgdet_checkpoint(data_root)
    p = Predictor(None, ckpt, device="cpu")
    assert p.task == "sgdet" and p.cfg.model.box_channels == 0
    assert p.model.stem[0].in_channels == 3
    pred = p.predict(np.zeros((64, 80, 3), np.uint8))
    assert pred.graph.graph["width"] == 80
    with pytest.raises(ValueError, match="the model's data.task is 'sgdet' \\(no box input"):
        p.predict(np.zeros((64, 80, 3), np.uint8), boxes=[[0, 0, 10, 10]])


def test_predcls_on_a_model_without_box_channels_is_an_error(data_root):
    # The stored config says box_channels 0: asking it for predcls is a config error.
    _, ckpt = _sgdet_checkpoint(data_root, old=False)
    with pytest.raises(ConfigError, match=r"model.box_channels: data.task 'predcls' needs .* "
                                          r"got 0 \(a model without box input channels"):
        config_from_checkpoint(ckpt, ["data.task=predcls"])
    # A config that fits the task but not the weights (an older checkpoint, or a config file):
    # the checkpoint's first layer is checked before loading.
    msg = (r"checkpoint: data.task 'predcls' needs a model with 9 input channels \(3 image \+ 6 "
           r"box channels\), but the checkpoint's first layer \(stem.0.weight\) takes 3: a "
           r"model without box input channels")
    _, old = _sgdet_checkpoint(data_root)
    for cfg in (_cfg(data_root, "unused", "predcls"),
                config_from_checkpoint(old, ["data.task=predcls"])):
        with pytest.raises(ValueError, match=msg):
            Predictor(cfg, old, device="cpu")


def test_read_objects_reads_class_and_tag_at_the_given_centres():
    # 2 slots x 3 classes on a 4x5 map, E = 1. Object 0: box centre (1.0, 2.4) -> pixel
    # (1, 2); object 1: centre (3.5, 0.5) -> pixel (4, 1) (half up).
    heat = np.zeros((6, 4, 5), np.float32)
    heat[1, 2, 1] = 0.7   # slot 0, class 1 at object 0
    heat[5, 2, 1] = 0.9   # slot 1, class 2 at object 0: the best
    heat[3, 1, 4] = 0.6   # slot 1, class 0 at object 1
    heat[0, 1, 4] = 0.2   # slot 0, class 0
    tags = np.zeros((2, 1, 4, 5), np.float32)
    tags[0, 0] = np.arange(20).reshape(4, 5)
    tags[1, 0] = 100 + np.arange(20).reshape(4, 5)
    boxes = np.array([[0.0, 1.4, 2.0, 3.4], [3.0, 0.0, 4.0, 1.0]])
    sg = read_objects(heat, tags, boxes, slots=2)
    assert sg.labels.tolist() == [2, 0]
    np.testing.assert_allclose(sg.scores, [0.9, 0.6])
    np.testing.assert_allclose(sg.tags[:, 0], [100 + 11, 100 + 9])  # slot 1 at both pixels
    np.testing.assert_allclose(sg.keypoints[0, 2], [1.0, 2.4, 0.9], rtol=1e-6)
    np.testing.assert_array_equal(sg.boxes, boxes.astype(np.float32))
    # predcls: the given class; the tag from the slot where that class is highest.
    pc = read_objects(torch.from_numpy(heat), torch.from_numpy(tags), boxes,
                      labels=np.array([1, 0]), slots=2)
    assert pc.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(pc.scores, [1.0, 1.0])
    np.testing.assert_allclose(pc.tags[:, 0], [11, 100 + 9])
    with pytest.raises(ValueError, match=r"labels: expected classes in 0..2"):
        read_objects(heat, tags, boxes, labels=np.array([0, 3]), slots=2)
