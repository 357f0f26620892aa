"""tools/convert_weights.py: a released checkpoint in, an aehg checkpoint out that Predictor,
tools/infer.py and tools/eval.py take as it is."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aehg.inference import Predictor

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "images" / "grace_hopper.jpg"
sys.path.insert(0, str(ROOT / "tests" / "models"))
from released_nets import PaePoseNet, PshPoseNet, randomize  # noqa: E402


def _tool(name):
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"aehg_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save(path, net):
    torch.save({"state_dict": {f"model.module.{k}": v for k, v in net.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 120}, path)
    return path


@pytest.fixture(scope="module")
def mpii(tmp_path_factory):
    """A narrow pytorch_stacked_hourglass checkpoint converted with the MPII config."""
    tmp = tmp_path_factory.mktemp("psh")
    source = _save(tmp / "checkpoint.pt", randomize(PshPoseNet(2, 128, 16), seed=5))
    out = tmp / "hg2_mpii.pt"
    code = _tool("convert_weights").main(["--from", "pytorch_stacked_hourglass", str(source),
                                          "--out", str(out), "model.channels=128"])
    assert code == 0
    return {"tmp": tmp, "source": source, "out": out}


def test_convert_prints_what_it_did(mpii, capsys, tmp_path):
    code = _tool("convert_weights").main(["--from", "pytorch_stacked_hourglass",
                                          str(mpii["source"]), "--out", str(tmp_path / "o.pt"),
                                          "model.channels=128"])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith("pytorch_stacked_hourglass: 617 tensors (1.74 M parameters) -> ")
    assert "model.num_stacks=2 model.input_norm=none; 60 known-unused source tensor(s)" in printed
    assert str(ROOT / "configs" / "mpii_hourglass.yaml") in printed


def test_predictor_runs_the_converted_model_on_a_person_crop(mpii):
    ckpt = torch.load(mpii["out"], weights_only=True)
    assert ckpt["config"]["data"]["kind"] == "single_pose"
    predictor = Predictor(None, mpii["out"], device="cpu", flip=False)
    center, scale = (300.0, 250.0), 1.5
    pred = predictor.predict(PHOTO, center=center, scale=scale)
    kp = pred.keypoints
    assert kp.shape == (1, 16, 3) and pred.scores.shape == (1,)
    # Every joint lies in the 200·scale px square around the centre (the crop the model saw).
    half = 100 * scale
    assert (np.abs(kp[0, :, 0] - center[0]) <= half + 2).all()
    assert (np.abs(kp[0, :, 1] - center[1]) <= half + 2).all()
    assert (kp[0, :, 2] > 0).all()
    whole = predictor.predict(PHOTO)
    assert whole.keypoints.shape == (1, 16, 3)
    assert not np.allclose(whole.keypoints, kp)
    assert pred.graph.number_of_nodes() == 1 and pred.graph.number_of_edges() == 0


def test_infer_and_eval_tools_take_the_converted_checkpoint(mpii, capsys):
    out = mpii["tmp"] / "infer"
    code = _tool("infer").main(["--checkpoint", str(mpii["out"]), "--input", str(PHOTO),
                                "--output", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (out / "drawings" / "grace_hopper.jpg").is_file()
    assert (out / "graphs" / "grace_hopper.json").is_file()
    capsys.readouterr()
    # PCKh on a synthetic MPII-format set (real MPII images are not in the repository), with
    # the config stored in the converted checkpoint.
    data = mpii["tmp"] / "synthetic"
    overrides = ["data.source=synthetic", "data.synthetic.kind=single", f"data.root={data}",
                 "data.synthetic.num_train=2", "data.synthetic.num_val=3",
                 "data.synthetic.image_size=128", "data.input_size=128", "data.output_size=32",
                 "data.num_workers=0", "train.batch_size=2"]
    code = _tool("eval").main(["--checkpoint", str(mpii["out"]), "--output",
                               str(mpii["tmp"] / "eval"), "--no-progress", "--device", "cpu",
                               *overrides])
    printed = capsys.readouterr().out
    assert code == 0
    assert ("PCKh       Head Shoulder    Elbow    Wrist      Hip     Knee    Ankle     Mean\n"
            "@0.5 ") in printed
    assert "(42 joints counted; Mean without pelvis and thorax)" in printed
    metrics = json.loads((mpii["tmp"] / "eval" / "metrics.json").read_text())
    assert {"PCKh@0.5", "PCKh@0.1", "PCKh@0.5/Head", "PCKh@0.5/l_wrist"} <= set(metrics)
    rows = json.loads((mpii["tmp"] / "eval" / "results.json").read_text())
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert len(rows[0]["keypoints"]) == 48 and rows[0]["imgname"] == "000000.png"


def test_a_config_with_another_input_norm_is_refused(mpii, capsys):
    # The RGB / 255 network given ImageNet-normalised input would fail silently.
    code = _tool("eval").main(["--config", str(ROOT / "configs" / "mpii_hourglass_2stack.yaml"),
                               "--checkpoint", str(mpii["out"]), "--no-progress",
                               "--device", "cpu", "model.channels=128"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"error: checkpoint {mpii['out']} was made with model.input_norm 'none' (its "
                   f"stored config), but this model has 'imagenet': pass "
                   f"model.input_norm=none or use the checkpoint's config\n")


def test_pose_ae_train_checkpoint_predicts_people(tmp_path):
    net = randomize(PaePoseNet(2, 128, 12, increase=16), seed=6)
    source = _save(tmp_path / "checkpoint.pth.tar", net)
    out = tmp_path / "ae.pt"
    code = _tool("convert_weights").main(["--from", "pose-ae-train", str(source), "--out",
                                          str(out), "model.channels=128", "model.increase=16",
                                          "model.num_classes=3", "eval.flip_test=false"])
    assert code == 0
    pred = Predictor(None, out, device="cpu").predict(PHOTO)
    assert pred.keypoints.shape[1:] == (3, 3)
    assert pred.instances.tags.shape[1] == 1


def test_wrong_source_kind_is_one_error_line(mpii, capsys, tmp_path):
    code = _tool("convert_weights").main(["--from", "mmpose-ae", str(mpii["source"]), "--out",
                                          str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"error: checkpoint {mpii['source']}: not a mmpose-ae checkpoint: no key "
                   f"'stem.0.bn.weight' (after stripping backbone.); it looks like a "
                   f"pytorch_stacked_hourglass checkpoint (use --from "
                   f"pytorch_stacked_hourglass)\n")
    assert not (tmp_path / "x.pt").exists()
    # A config of another shape: the key that does not fit.
    code = _tool("convert_weights").main(["--from", "pytorch_stacked_hourglass",
                                          str(mpii["source"]), "--out", str(tmp_path / "y.pt")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"error: checkpoint {mpii['source']}: key 'pre.4.conv1.conv.weight' has shape "
                   f"(64, 128, 1, 1), expected (128, 128, 1, 1) for aehg "
                   f"'stem.6.body.2.weight' (another architecture or config?)\n")
