"""tools/eval.py and tools/infer.py end to end on a tiny synthetic checkpoint."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from aehg.checkpoint import save_checkpoint
from aehg.config import config_from_dict, config_to_dict, save_config
from aehg.data import build_dataset
from aehg.export import read_graphml, read_node_link, relation_results_to_graphs
from aehg.models import build_model

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "images" / "grace_hopper.jpg"


def _tool(name):
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"aehg_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg_dict(root, kind, channels=16):
    pose = kind == "pose"
    return {
        "model": {"num_stacks": 2, "channels": channels, "depth": 2,
                  "num_classes": 7 if pose else 3, "num_link_classes": 0 if pose else 2,
                  "tag_per_class": pose, "box_size": not pose,
                  "embedding_dim": 1 if pose else 4},
        "data": {"kind": kind, "source": "synthetic", "root": str(root), "input_size": 64,
                 "output_size": 16, "num_workers": 0,
                 "synthetic": {"kind": "pose" if pose else "graph", "num_train": 2,
                               "num_val": 4, "image_size": 64, "num_object_classes": 3,
                               "num_link_classes": 2}},
        "train": {"batch_size": 2, "device": "cpu"},
        "eval": {"detection_threshold": 0.2, "link_threshold": 0.2},
    }


def _make_run(tmp_path_factory, kind):
    """A config file, a tiny checkpoint and the synthetic val images of one kind."""
    tmp = tmp_path_factory.mktemp(kind)
    cfg = config_from_dict(_cfg_dict(tmp / "data", kind))
    config_path = tmp / "config.yaml"
    save_config(cfg, config_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for head in model.heads:  # make the random model fire somewhere
        nn.init.normal_(head.weight, std=0.3)
    ckpt = tmp / "run" / "last.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config_to_dict(cfg),
                           "epoch": 0, "step": 0})
    images = build_dataset(cfg, "val").image_dir
    return {"kind": kind, "tmp": tmp, "config": config_path, "checkpoint": ckpt,
            "images": Path(images), "cfg": cfg}


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory):
    return _make_run(tmp_path_factory, "pose")


@pytest.fixture(scope="module")
def relations_run(tmp_path_factory):
    return _make_run(tmp_path_factory, "relations")


@pytest.fixture(params=["pose", "relations"])
def run(request):
    return request.getfixturevalue(f"{request.param}_run")


def test_eval_cli_end_to_end(run, capsys):
    out = run["tmp"] / "eval_out"
    code = _tool("eval").main(["--config", str(run["config"]), "--checkpoint",
                               str(run["checkpoint"]), "--output", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    results = json.loads((out / "results.json").read_text())
    if run["kind"] == "pose":
        assert "Average Precision" in printed  # the COCO table
        assert set(metrics) >= {"AP", "AP50", "AR"}
        assert isinstance(results, list)
        assert all({"image_id", "keypoints", "score"} <= set(r) for r in results)
    else:
        assert "R@50" in printed and "object_recall" in printed
        assert set(metrics) >= {"R@20", "ngR@50", "mR@100", "object_recall"}
        graphs = relation_results_to_graphs(results)
        assert len(graphs) == 4
        assert {"predicate_categories", "relationships"} <= set(results)
    # Overrides reach the config: flip test doubles the tag dimension of the results.
    code = _tool("eval").main(["--config", str(run["config"]), "--checkpoint",
                               str(run["checkpoint"]), "--output", str(out / "flip"),
                               "--no-progress", "eval.flip_test=true", "eval.stacks=1"])
    assert code == 0 and (out / "flip" / "metrics.json").is_file()


def test_eval_cli_errors(run, capsys, tmp_path):
    tool = _tool("eval")
    code = tool.main(["--config", str(run["config"]), "--checkpoint", str(tmp_path / "no.pt")])
    assert code == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # Another architecture: the message names the mismatched keys.
    code = tool.main(["--config", str(run["config"]), "--checkpoint", str(run["checkpoint"]),
                      "model.channels=32", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "does not fit this model" in err and "shape mismatch" in err
    assert str(run["checkpoint"]) in err and "hourglasses.0." in err  # names file and keys


def test_infer_cli_on_a_folder(run, capsys):
    out = run["tmp"] / "infer_json"
    code = _tool("infer").main(["--config", str(run["config"]), "--checkpoint",
                                str(run["checkpoint"]), "--input", str(run["images"]),
                                "--output", str(out), "--flip", "--stacks", "1",
                                "--no-progress"])
    assert code == 0, capsys.readouterr().err
    pictures = sorted(run["images"].glob("*.png"))
    assert len(pictures) == 4
    for p in pictures:
        drawing = cv2.imread(str(out / "drawings" / p.name))
        assert drawing is not None and drawing.shape == cv2.imread(str(p)).shape
        g = read_node_link(out / "graphs" / f"{p.stem}.json")
        assert g.graph["file_name"] == p.name
        for _, d in g.nodes(data=True):
            assert len(d["tag"]) == 2 * run["cfg"].model.embedding_dim  # flip test
    results = json.loads((out / "results.json").read_text())
    assert [im["file_name"] for im in results["images"]] == [p.name for p in pictures]


def test_infer_cli_graphml_without_config(relations_run, capsys, tmp_path):
    run = relations_run
    single = tmp_path / "in"
    single.mkdir()
    src = sorted(run["images"].glob("*.png"))[0]
    shutil.copy(src, single / src.name)
    out = tmp_path / "out"
    code = _tool("infer").main(["--checkpoint", str(run["checkpoint"]), "--input",
                                str(single / src.name), "--output", str(out), "--format",
                                "graphml", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    g = read_graphml(out / "graphs" / f"{src.stem}.graphml")
    assert g.graph["image_id"] == 0 and g.graph["width"] == 64
    for _, d in g.nodes(data=True):
        assert np.asarray(d["box"]).shape == (4,)


def test_infer_cli_real_photo_pose(pose_run, capsys, tmp_path):
    run = pose_run
    out = tmp_path / "out"
    code = _tool("infer").main(["--checkpoint", str(run["checkpoint"]), "--input", str(PHOTO),
                                "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert cv2.imread(str(out / "drawings" / "grace_hopper.jpg")).shape == \
        cv2.imread(str(PHOTO)).shape
    assert read_node_link(out / "graphs" / "grace_hopper.json").graph["file_name"] == \
        "grace_hopper.jpg"


def test_infer_cli_errors(pose_run, capsys, tmp_path):
    run = pose_run
    tool = _tool("infer")
    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not a jpeg at all")
    args = ["--checkpoint", str(run["checkpoint"]), "--output", str(tmp_path / "out"),
            "--no-progress"]
    assert tool.main(args + ["--input", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "cannot decode image file" in err and "b.jpg" in err
    assert tool.main(args + ["--input", str(folder), "--skip-unreadable"]) == 0
    graphs = tmp_path / "out" / "graphs"
    assert (graphs / "a.json").is_file() and not (graphs / "b.json").exists()
    capsys.readouterr()
    assert tool.main(args + ["--input", str(tmp_path / "nothing")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert tool.main(["--checkpoint", str(tmp_path / "none.pt"), "--input", str(PHOTO),
                      "--output", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    save_config(config_from_dict(_cfg_dict(run["tmp"] / "data", "pose", channels=32)), other)
    assert tool.main(["--config", str(other)] + args + ["--input", str(PHOTO)]) == 2
    err = capsys.readouterr().err
    assert str(run["checkpoint"]) in err and "shape mismatch" in err


def test_tools_run_as_scripts(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), "--checkpoint",
                          str(tmp_path / "missing.pt"), "--input", str(PHOTO), "--output",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "checkpoint not found" in res.stderr
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "eval.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--checkpoint" in res.stdout
