"""tools/eval.py and tools/infer.py end to end on a tiny synthetic checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import re
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
        # The 64 px pictures are drawn at 512 px, with a legend panel on the right.
        assert drawing is not None and drawing.shape[0] == 512 and drawing.shape[1] > 512
        g = read_node_link(out / "graphs" / f"{p.stem}.json")
        assert g.graph["file_name"] == p.name
        for _, d in g.nodes(data=True):
            assert len(d["tag"]) == 2 * run["cfg"].model.embedding_dim  # flip test
    results = json.loads((out / "results.json").read_text())
    assert [im["file_name"] for im in results["images"]] == [p.name for p in pictures]
    assert cv2.imread(str(out / "overview.png")) is not None  # 4 pictures: one sheet


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
    drawing = cv2.imread(str(out / "drawings" / "grace_hopper.jpg"))
    photo = cv2.imread(str(PHOTO))  # 600 x 512: large enough, drawn at its size plus a legend
    assert drawing.shape[0] == photo.shape[0] and drawing.shape[1] > photo.shape[1]
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
    assert f"input not found: {tmp_path / 'nothing'}" in capsys.readouterr().err
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


SGB_FIELDS = ["bbox", "bbox_labels", "bbox_scores", "rel_pairs", "rel_labels", "rel_scores",
              "rel_all_scores"]
RECALL_FAMILIES = ("R", "ngR", "mR", "ng-mR", "zR", "ng-zR")


def _check_sgb_pair(out, cfg, files, results):
    """custom_prediction.json / custom_data_info.json read with plain json: SGB's field names,
    consistent lengths, 1-based labels, relations ranked by the aehg triplet score, and the
    same objects and relations per image as results.json. Returns the number of relations."""
    pred = json.loads((out / "custom_prediction.json").read_text())
    info = json.loads((out / "custom_data_info.json").read_text())
    c, r = cfg.model.num_classes, cfg.model.num_link_classes
    assert info["idx_to_files"] == [str(f) for f in files]
    assert len(info["ind_to_classes"]) == c + 1 and len(info["ind_to_predicates"]) == r + 1
    assert info["ind_to_classes"][0] == info["ind_to_predicates"][0] == "__background__"
    assert list(pred) == [str(i) for i in range(len(files))]
    anns = [sum(a["image_id"] == im["id"] for a in results["annotations"])
            for im in results["images"]]
    rels = [sum(x["image_id"] == im["id"] for x in results["relationships"])
            for im in results["images"]]
    for i, entry in enumerate(pred.values()):
        assert list(entry) == SGB_FIELDS
        n, m = len(entry["bbox"]), len(entry["rel_pairs"])
        assert (n, m) == (anns[i], rels[i])
        assert len(entry["bbox_labels"]) == len(entry["bbox_scores"]) == n
        assert len(entry["rel_labels"]) == len(entry["rel_scores"]) == \
            len(entry["rel_all_scores"]) == m
        assert all(len(b) == 4 and b[0] <= b[2] and b[1] <= b[3] for b in entry["bbox"])
        assert all(1 <= lab <= c for lab in entry["bbox_labels"])
        scores = entry["bbox_scores"]
        assert scores == sorted(scores, reverse=True)
        ranking = []
        for (s, o), lab, score, row in zip(entry["rel_pairs"], entry["rel_labels"],
                                           entry["rel_scores"], entry["rel_all_scores"],
                                           strict=True):
            assert 0 <= s < n and 0 <= o < n and s != o
            assert 1 <= lab <= r and len(row) == r + 1 and row[0] == 0.0 and row[lab] == score
            ranking.append(score * math.sqrt(max(scores[s], 0) * max(scores[o], 0)))
        assert all(a >= b - 1e-12 for a, b in zip(ranking[:-1], ranking[1:], strict=True))
    return sum(rels)


def test_eval_cli_relations_prints_every_sgb_metric_and_writes_sgb_files(relations_run, capsys):
    run = relations_run
    out = run["tmp"] / "eval_sgb"
    code = _tool("eval").main(["--config", str(run["config"]), "--checkpoint",
                               str(run["checkpoint"]), "--output", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    lines = printed.splitlines()
    number = r"(\d\.\d{4}|nan)"
    for fam in RECALL_FAMILIES:
        (line,) = [ln for ln in lines if ln.startswith(f"{fam}@20 ")]
        cells = re.fullmatch(rf"{fam}@20 +{number} +{fam}@50 +{number} +{fam}@100 +{number}",
                             line)
        assert cells, line
        for k, text in zip((20, 50, 100), cells.groups(), strict=True):
            assert text == f"{metrics[f'{fam}@{k}']:.4f}"
    for key in ("object_recall", "object_AP", "object_AP50"):
        assert re.search(rf"^{key} +{number}$", printed, flags=re.MULTILINE)
    train_json = run["tmp"] / "data" / "annotations" / "train.json"
    assert re.search(rf"^zero-shot triplets: those not among the \d+ training triplets of "
                     rf"{re.escape(str(train_json))}$", printed, flags=re.MULTILINE)
    assert "ranked by eval.triplet_score: aehg; mR@K over the 2 predicates" in printed
    # The per-predicate table and its JSON list: the terms of mR@K, over both predicates.
    ds = build_dataset(run["cfg"], "val")
    rows = json.loads((out / "predicate_recall.json").read_text())
    assert [row["name"] for row in rows] == ds.predicate_names
    for k in (20, 50, 100):
        assert sum(row[f"R@{k}"] or 0.0 for row in rows) / 2 == pytest.approx(metrics[f"mR@{k}"])
    assert re.search(r"^predicate +GT +images +R@20 +R@50 +R@100 +ngR@20 +ngR@50 +ngR@100$",
                     printed, flags=re.MULTILINE)
    for row in rows:
        assert re.search(rf"^{row['name']} +{row['relations']} +{row['images']} ", printed,
                         flags=re.MULTILINE)
    results = json.loads((out / "results.json").read_text())
    pictures = sorted(run["images"].glob("*.png"))
    assert _check_sgb_pair(out, run["cfg"], pictures, results) >= 1


def test_infer_cli_writes_the_sgb_pair_for_a_relation_model(relations_run, capsys, tmp_path):
    run = relations_run
    out = tmp_path / "out"
    code = _tool("infer").main(["--checkpoint", str(run["checkpoint"]), "--input",
                                str(run["images"]), "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    pictures = sorted(run["images"].glob("*.png"))
    assert _check_sgb_pair(out, run["cfg"], pictures, results) >= 1


def test_infer_cli_pose_model_writes_no_sgb_pair(pose_run, capsys, tmp_path):
    run = pose_run
    out = tmp_path / "out"
    code = _tool("infer").main(["--checkpoint", str(run["checkpoint"]), "--input", str(PHOTO),
                                "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["drawings", "graphs", "results.json"]
