#!/usr/bin/env python
"""Run a trained model on pictures, a video or a webcam; write drawings and graphs.

Example:
    python tools/infer.py --checkpoint outputs/demo/pose/best.pt --input photo.jpg --output out
    python tools/infer.py --config C --checkpoint P --input folder/ --output out --flip \\
        --stacks 1 --format graphml
    python tools/infer.py --checkpoint P --input clip.mp4 --output out      # out/clip.mp4, .jsonl
    python tools/infer.py --checkpoint P --input 0 --output out --max-frames 300   # webcam 0

For every picture ``name.ext`` the output folder gets the drawing (skeletons, boxes, relation
arrows, at least 512 px on the long side, with a legend) in ``drawings/`` and
``graphs/name.json`` (networkx node-link) or ``graphs/name.graphml``, plus one
``results.json`` of all pictures in the relation-results format (the sub-folders keep a
picture called ``results.jpg`` from colliding with it) and, for a scene-graph model,
Scene-Graph-Benchmark's ``custom_prediction.json`` and ``custom_data_info.json`` (triplets
ranked by ``eval.triplet_score``); several pictures also give ``overview.png`` (the first 16 on
one sheet). A video (any file OpenCV reads) or a webcam index gives the annotated video
``name.mp4`` and ``name.jsonl``, one JSON line per frame with the frame's graph
(``aehg.inference.run_video``). Without ``--config`` the config stored in the checkpoint is
used. An expected failure prints one ``error: …`` line and exits 2; ``--debug`` (or
``AEHG_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from aehg.checkpoint import load_checkpoint
from aehg.cli import add_debug_argument, run_tool
from aehg.config import load_config, resolve_device
from aehg.inference import (
    Predictor,
    check_video,
    config_from_checkpoint,
    input_kind,
    list_images,
    run_inference,
    run_video,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML config (default: the checkpoint's)")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    parser.add_argument("--input", required=True,
                        help="a picture, a folder of pictures, a video or a webcam index (0)")
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
    parser.add_argument("--max-frames", type=int, default=None,
                        help="video/webcam: stop after this many frames (default: all / Ctrl-C)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> None:
    kind = input_kind(args.input)  # first: a wrong path should not wait for the model
    inputs = list_images(args.input) if kind == "images" else []
    if kind != "images":
        check_video(args.input)
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
    if kind != "images":
        done = run_video(predictor, args.input, args.output, progress=not args.no_progress,
                         max_frames=args.max_frames)
        print(f"{done.frames} frame(s): {done.instances} instance(s), {done.links} link(s) -> "
              f"{done.video}, {done.frames_file}")
        return
    preds = run_inference(predictor, inputs, args.output, fmt=args.format,
                          skip_unreadable=args.skip_unreadable, progress=not args.no_progress)
    people = sum(len(p.scores) for p in preds)
    links = sum(p.graph.number_of_edges() for p in preds)
    print(f"{len(preds)} picture(s): {people} instance(s), {links} link(s) -> {args.output}")


if __name__ == "__main__":
    sys.exit(main())
