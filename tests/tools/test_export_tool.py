"""tools/export.py: a checkpoint in, a program that equals the eager network out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from aehg.checkpoint import save_checkpoint
from aehg.config import config_from_dict, config_to_dict
from aehg.models import build_model
from aehg.models.deploy import load_program

ROOT = Path(__file__).resolve().parents[2]


def _export_tool():
    spec = importlib.util.spec_from_file_location("aehg_tool_export", ROOT / "tools" /
                                                  "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(tmp_path):
    cfg = config_from_dict({"model": {"num_stacks": 2, "channels": 16, "depth": 2,
                                      "num_classes": 5, "embedding_dim": 1},
                            "data": {"input_size": 64, "output_size": 16}})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    path = save_checkpoint(tmp_path / "last.pt", {"model": model.state_dict(),
                                                  "config": config_to_dict(cfg)})
    return model, path


def test_export_tool_writes_an_early_exit_program(tmp_path, capsys):
    model, ckpt = _checkpoint(tmp_path)
    out = tmp_path / "s1.pt2"
    code = _export_tool().main(["--checkpoint", str(ckpt), "--format", "torch_export",
                                "--stacks", "1", "--dynamic", "--output", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out} (torch_export, 1 of 2 stacks, "
                                               f"input 64x64, dynamic)")
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        heat, tags = load_program(out).module()(x)
        ref = model(x, stacks=1)[-1].objects
    torch.testing.assert_close(heat, ref.heatmaps, atol=1e-5, rtol=0)
    torch.testing.assert_close(tags, ref.tags, atol=1e-5, rtol=0)


def test_export_tool_errors(tmp_path, capsys):
    tool = _export_tool()
    assert tool.main(["--checkpoint", str(tmp_path / "none.pt"), "--output",
                      str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint not found: {tmp_path}/none.pt"
    _, ckpt = _checkpoint(tmp_path)
    assert tool.main(["--checkpoint", str(ckpt), "--stacks", "3", "--output",
                      str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == "error: stacks: expected 1..2 (the model's " \
                                              "stacks), got 3"
    assert tool.main(["--checkpoint", str(ckpt), "--input-size", "60", "--output",
                      str(tmp_path / "x.onnx")]) == 2
    assert "input_size: expected positive multiples of 16" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
