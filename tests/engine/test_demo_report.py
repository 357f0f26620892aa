"""The demo's closing report: figures, time taken, where the pictures, overview and graphs are."""

from __future__ import annotations

from aehg.engine import demo

ROWS = [
    {"demo": "demo_pose", "kind": "pose", "steps": 550, "train_s": 301.2, "total_s": 322.7,
     "metrics": {"AP": 0.8123, "AP50": 0.95, "AR": 0.85, "loss": 1.0},
     "output_dir": "out/demo_pose", "pictures": 16,
     "drawings": "out/demo_pose/predictions/drawings",
     "overview": "out/demo_pose/predictions/overview.png",
     "graphs": "out/demo_pose/predictions/graphs"},
    {"demo": "demo_graph", "kind": "relations", "steps": 700, "train_s": 390.0, "total_s": 411.0,
     "metrics": {"R@20": 0.5912, "ngR@20": 0.7, "mR@20": 0.55, "R@50": 0.6,
                 "object_recall": 0.9, "object_AP50": 0.8},
     "output_dir": "out/demo_graph", "pictures": 16,
     "drawings": "out/demo_graph/predictions/drawings",
     "overview": "out/demo_graph/predictions/overview.png",
     "graphs": "out/demo_graph/predictions/graphs"},
]


def test_report_has_figures_time_and_places():
    text = demo.format_summary(ROWS, seconds=733.7)
    lines = text.splitlines()
    assert lines[1].split() == ["demo_pose", "550", "301s", "323s", "AP", "0.812", "AP50",
                                "0.950", "AR", "0.850"]
    assert "R@20 0.591  ngR@20 0.700" in lines[2]
    assert "time taken: 734 s (12.2 min)" in lines
    for r in ROWS:
        assert f"  pictures  {r['drawings']}/ (16 validation images with predictions)" in lines
        assert f"  overview  {r['overview']}" in lines
        assert f"  graphs    {r['graphs']}/ (16 node-link .json + 16 .graphml)" in lines
    # Without the time: no time line; a row without the places (an old summary.json): figures.
    old = {k: v for k, v in ROWS[0].items() if k not in ("drawings", "overview", "graphs")}
    assert demo.format_summary([old]).splitlines()[1:] == lines[1:2]


def test_main_prints_the_report(monkeypatch, capsys):
    calls = []

    def fake_run_demo(out, demos, overrides):
        calls.append((out, list(demos), list(overrides)))
        return ROWS

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert demo.main(["--out", "out", "--only", "demo_pose", "train.max_minutes=1"]) == 0
    printed = capsys.readouterr().out
    assert calls == [("out", ["demo_pose"], ["train.max_minutes=1"])]
    assert "AP 0.812" in printed and "R@20 0.591" in printed
    assert "time taken: " in printed
    assert "  overview  out/demo_graph/predictions/overview.png" in printed
