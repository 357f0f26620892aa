"""End to end: the demo configs learn on the CPU within minutes (synthetic data, real pipeline).

This is the suite's one long test (about 8 minutes on two cores); it must not share the machine
with benchmarks or another torch process, or its time budget buys fewer steps.
"""

from pathlib import Path

import pytest

from aehg.config import load_config
from aehg.engine import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
def test_demo_pose_learns_in_three_minutes(tmp_path):
    cfg = load_config(CONFIGS / "demo_pose.yaml", [
        f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
        "train.max_minutes=3"])
    summary = train(cfg)
    assert summary["seconds"] < 3 * 60 + 30
    ap = summary["metrics"]["AP"]
    print(f"demo_pose: {summary['step']} steps, {summary['seconds']:.0f} s, AP {ap:.3f}")
    assert ap >= 0.5, summary["metrics"]


@pytest.mark.slow
def test_demo_graph_learns_in_four_minutes(tmp_path):
    cfg = load_config(CONFIGS / "demo_graph.yaml", [
        f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
        "train.max_minutes=4"])
    summary = train(cfg)
    assert summary["seconds"] < 4 * 60 + 30
    m = summary["metrics"]
    print(f"demo_graph: {summary['step']} steps, {summary['seconds']:.0f} s, "
          f"object recall {m['object_recall']:.3f}, ngR@20 {m['ngR@20']:.3f}")
    assert m["object_recall"] >= 0.9, m
    assert m["ngR@20"] >= 0.2, m
