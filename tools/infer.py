#!/usr/bin/env python
"""Run a trained model on a picture or a folder of pictures; write drawings and graphs.

Example:
    python tools/infer.py --checkpoint outputs/demo/pose/best.pt --input photo.jpg --output out
    python tools/infer.py --config C --checkpoint P --input folder/ --output out --flip \\
        --stacks 1 --format graphml

For every picture ``name.ext`` the output folder gets the drawing (skeletons, boxes, relation
arrows) in ``drawings/`` and ``graphs/name.json`` (networkx node-link) or
``graphs/name.graphml``, plus one ``results.json`` of all pictures in the relation-results
format (the sub-folders keep a picture called ``results.jpg`` from colliding with it) and, for
a scene-graph model, Scene-Graph-Benchmark's ``custom_prediction.json`` and
``custom_data_info.json`` (triplets ranked by ``eval.triplet_score``). Without
``--config`` the config stored in the checkpoint is used. An expected failure prints one
``error: …`` line and exits 2; ``--debug`` (or ``AEHG_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from aehg.checkpoint import load_checkpoint
from aehg.cli import add_debug_argument, run_tool
from aehg.config import load_config, resolve_device
from aehg.inference import (
    Predictor,
    config_from_checkpoint,
    list_images,
    run_inference,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML config (default: the checkpoint's)")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    parser.add_argument("--input", required=True, help="a picture or a folder of pictures")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--flip", action="store_true", help="flip test")
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="test scales (default: eval.scales)")
    parser.add_argument("--stacks", type=int, default=None,
                        help="early exit after this many stacks (default: all)")
    parser.add_argument("--format", choices=("json", "graphml"), default="json",
                        help="graph file format")
    parser.add_argument("--device", default=None, help="cpu, cuda, … (default: auto)")
    parser.add_argument("--batch-size", type=int, default=8, help="pictures per forward pass")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="skip pictures that cannot be read instead of stopping")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> None:
    inputs = list_images(args.input)  # first: a wrong path should not wait for the model
    if args.config is not None:
        cfg = load_config(args.config, args.overrides)
        checkpoint = args.checkpoint  # the path, so that a mismatch error names the file
    else:
        checkpoint = load_checkpoint(args.checkpoint)
        cfg = config_from_checkpoint(checkpoint, args.overrides,
                                     source=f"checkpoint {args.checkpoint}")
    device = None if args.device is None else resolve_device(args.device, key="--device")
    predictor = Predictor(cfg, checkpoint,
                          device=device, flip=args.flip or None, scales=args.scales,
                          stacks=args.stacks, batch_size=args.batch_size)
    preds = run_inference(predictor, inputs, args.output, fmt=args.format,
                          skip_unreadable=args.skip_unreadable, progress=not args.no_progress)
    people = sum(len(p.scores) for p in preds)
    links = sum(p.graph.number_of_edges() for p in preds)
    print(f"{len(preds)} picture(s): {people} instance(s), {links} link(s) -> {args.output}")


if __name__ == "__main__":
    sys.exit(main())
