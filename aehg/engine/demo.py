"""The demo job behind ``make demo``: synthetic data → training → evaluation → pictures, graphs.

Example:
    >>> from aehg.engine.demo import run_demo
    >>> rows = run_demo("outputs/demo")      # trains configs/demo_pose.yaml and demo_graph.yaml
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aehg.config import load_config
from aehg.io import write_json

__all__ = ["DEMO_CONFIGS", "format_summary", "run_demo"]

log = logging.getLogger("aehg.demo")

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEMO_CONFIGS = ("demo_pose", "demo_graph")

# Figures shown per kind of demo, in this order.
_SHOWN = {"pose": ("AP", "AP50", "AR"),
          "relations": ("R@20", "ngR@20", "mR@20", "R@50", "object_recall", "object_AP50")}


def _demo_one(name: str, config: Path, out_dir: Path, overrides: Sequence[str],
              num_pictures: int) -> dict[str, Any]:
    from aehg.data import build_dataset
    from aehg.engine.trainer import train
    from aehg.export import write_graphml
    from aehg.inference import Predictor, run_inference
    from aehg.inference.run import DRAWINGS_DIR, GRAPHS_DIR, OVERVIEW_FILE

    run_dir = out_dir / name
    cfg = load_config(config, [f"train.output_dir={run_dir}", *overrides])
    t0 = time.perf_counter()
    # Each demo run starts afresh: `make demo` is re-run into the same folders on purpose.
    summary = train(cfg, resume=None, validate=True, overwrite=True)
    train_s = summary["seconds"]

    # Pictures, an overview sheet and exported graphs of the first validation images, from the
    # final weights.
    val = build_dataset(cfg, "val")
    image_dir = Path(val.image_dir)
    files = [image_dir / val.coco.imgs[i]["file_name"] for i in val.ids[:num_pictures]]
    predictor = Predictor(cfg, run_dir / "last.pt", device=cfg.train.device)
    pictures = run_dir / "predictions"
    preds = run_inference(predictor, files, pictures, fmt="json", progress=False)
    for path, pred in zip(files, preds, strict=True):
        write_graphml(pictures / GRAPHS_DIR / f"{path.stem}.graphml", pred.graph)
    row = {"demo": name, "kind": cfg.data.kind, "steps": summary["step"],
           "train_s": train_s, "total_s": time.perf_counter() - t0,
           "metrics": {k: float(v) for k, v in summary["metrics"].items()},
           "output_dir": str(run_dir), "pictures": len(preds),
           "drawings": str(pictures / DRAWINGS_DIR),
           "overview": str(pictures / OVERVIEW_FILE) if len(preds) > 1 else None,
           "graphs": str(pictures / GRAPHS_DIR)}
    write_json(run_dir / "summary.json", row, indent=2)
    return row


def format_summary(rows: Sequence[dict[str, Any]], seconds: float | None = None) -> str:
    """The demo's closing report: one line per demo (steps, time, figures), the total time when
    ``seconds`` is given, and where each demo's pictures, overview sheet and graphs are."""
    lines = [f"{'demo':<12} {'steps':>6} {'train':>8} {'total':>8}  figures"]
    for r in rows:
        shown = _SHOWN.get(r["kind"], ())
        figures = "  ".join(f"{k} {r['metrics'][k]:.3f}" for k in shown if k in r["metrics"])
        lines.append(f"{r['demo']:<12} {r['steps']:>6} {r['train_s']:>7.0f}s "
                     f"{r['total_s']:>7.0f}s  {figures}")
    if seconds is not None:
        lines.append(f"time taken: {seconds:.0f} s ({seconds / 60:.1f} min)")
    for r in rows:
        if "drawings" not in r:  # a row of an older summary.json
            continue
        n = r.get("pictures", 0)
        lines.append(f"{r['demo']}:")
        lines.append(f"  pictures  {r['drawings']}/ ({n} validation images with predictions)")
        if r.get("overview"):
            lines.append(f"  overview  {r['overview']}")
        lines.append(f"  graphs    {r['graphs']}/ ({n} node-link .json + {n} .graphml)")
        lines.append(f"  run       {r['output_dir']}/ (checkpoints, metrics.jsonl, "
                     f"summary.json)")
    return "\n".join(lines)


def run_demo(out_dir: str | Path = "outputs/demo", demos: Sequence[str] = DEMO_CONFIGS,
             overrides: Sequence[str] = (), num_pictures: int = 16) -> list[dict[str, Any]]:
    """Train, evaluate and illustrate each demo config; write ``summary.json`` and pictures.

    Args:
        out_dir: where each demo's run goes (``out_dir/<demo>/``: checkpoints, metrics,
            ``predictions/`` with ``drawings/``, ``overview.png`` (all pictures on one sheet),
            ``graphs/`` (node-link JSON and GraphML) and ``results.json``).
        demos: names of configs in ``configs/``.
        overrides: ``key=value`` overrides applied to every demo config.
        num_pictures: validation images drawn and exported per demo.

    Returns:
        One summary row per demo (steps, seconds, validation metrics).
    """
    out_dir = Path(out_dir)
    rows = []
    t0 = time.perf_counter()
    for name in demos:
        config = CONFIG_DIR / f"{name}.yaml"
        print(f"== {name}: training {config.name} (threads: {torch.get_num_threads()})",
              flush=True)
        rows.append(_demo_one(name, config, out_dir, overrides, num_pictures))
        print(format_summary(rows[-1:]), flush=True)  # each demo's figures as soon as known
    write_json(out_dir / "summary.json",
               {"rows": rows, "seconds": time.perf_counter() - t0}, indent=2)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line of ``tools/demo.py``: ``[--out DIR] [--only NAME] [key=value ...]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="tools/demo.py", description="Run the aehg demos.")
    ap.add_argument("--out", default="outputs/demo", help="output folder")
    ap.add_argument("--only", choices=DEMO_CONFIGS, action="append",
                    help="run only this demo (repeatable)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every demo")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    rows = run_demo(args.out, args.only or DEMO_CONFIGS, args.overrides)
    print()
    print(format_summary(rows, seconds=time.perf_counter() - t0))
    return 0
