#!/usr/bin/env python
"""Evaluate a checkpoint on the validation split of its config.

Example:
    python tools/eval.py --config configs/demo_pose.yaml --checkpoint outputs/demo/pose/best.pt
    python tools/eval.py --config C --checkpoint P eval.flip_test=true eval.scales=[1,1.5]

Prints the metric table (COCO keypoint AP for pose; R@K, ngR@K, mR@K, object recall for
relations) and writes ``results.json`` and ``metrics.json`` to ``--output`` (default: ``eval/``
beside the checkpoint).
"""

from __future__ import annotations

import argparse
import sys

from aehg.config import ConfigError, load_config
from aehg.evaluation import evaluate_checkpoint
from aehg.inference import ImageReadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the run's YAML config")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    parser.add_argument("--output", default=None, help="folder for results.json / metrics.json")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: "
                        "train.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        evaluate_checkpoint(cfg, args.checkpoint, args.output, device=args.device,
                            progress=not args.no_progress)
    except (FileNotFoundError, ConfigError, ValueError, ImageReadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
