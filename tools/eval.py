#!/usr/bin/env python
"""Evaluate a checkpoint on the validation split of its config.

Example:
    python tools/eval.py --config configs/demo_pose.yaml --checkpoint outputs/demo/pose/best.pt
    python tools/eval.py --config C --checkpoint P eval.flip_test=true eval.scales=[1,1.5]

Prints the metric table (COCO keypoint AP for pose; for relations R@K, ngR@K, mR@K, ng-mR@K,
zR@K and ng-zR@K for every K of ``eval.recall_ks``, object recall / AP, and the per-predicate
recall table) and writes ``results.json`` and ``metrics.json`` to ``--output`` (default:
``eval/`` beside the checkpoint); for relations also ``predicate_recall.json`` and
Scene-Graph-Benchmark's ``custom_prediction.json`` / ``custom_data_info.json``. The triplets are
ranked by ``eval.triplet_score`` (``aehg`` or ``sgb``). An expected failure (missing file, bad
data or checkpoint, unavailable device, full disk …) prints one ``error: …`` line and exits 2;
``--debug`` (or ``AEHG_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from aehg.checkpoint import load_checkpoint
from aehg.cli import add_debug_argument, run_tool
from aehg.config import load_config, resolve_device
from aehg.evaluation import evaluate_checkpoint
from aehg.inference import config_from_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="the run's YAML config (default: the one stored in the checkpoint)")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    parser.add_argument("--output", default=None, help="folder for results.json, metrics.json "
                        "(and the relation files)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: "
                        "train.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> None:
    if args.config is not None:
        cfg, where = load_config(args.config, args.overrides), args.config
    else:  # e.g. a converted released model (tools/convert_weights.py)
        where = f"checkpoint {args.checkpoint}"
        cfg = config_from_checkpoint(load_checkpoint(args.checkpoint), args.overrides,
                                     source=where)
    # Checked here so that an unavailable device names the option or the config key it came from.
    device = resolve_device(args.device, key="--device") if args.device is not None else \
        resolve_device(cfg.train.device, key=f"{where}: train.device")
    evaluate_checkpoint(cfg, args.checkpoint, args.output, device=device,
                        progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
