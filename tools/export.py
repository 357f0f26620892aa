#!/usr/bin/env python
"""Export a trained network (up to any early-exit stack) to ONNX or ``torch.export``.

Example:
    python tools/export.py --checkpoint outputs/demo/demo_pose/best.pt --format onnx \\
        --stacks 1 --input-size 256 --dynamic --output pose_s1.onnx
    python tools/export.py --checkpoint CKPT --format torch_export --output pose.pt2

The ONNX file has one input ``image`` (B, 3, H, W: RGB, ImageNet-normalised, the validation
transform of ``aehg.inference.preprocess``) and the outputs ``heatmaps``, ``tags`` (then
``sizes``; ``link_heatmaps``, ``src``, ``dst`` when the model has them); ``aehg.group`` /
``aehg.decode_objects`` / ``aehg.build_graph`` take them as they are. ONNX needs
``pip install 'aehg[export]'``. Without ``--config`` the config stored in the checkpoint is
used.
"""

from __future__ import annotations

import argparse
import sys

from aehg.checkpoint import load_checkpoint, load_model_weights
from aehg.cli import add_debug_argument, run_tool
from aehg.config import load_config
from aehg.inference import config_from_checkpoint
from aehg.models import build_model
from aehg.models.deploy import export_onnx, export_program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    parser.add_argument("--config", default=None, help="YAML config (default: the checkpoint's)")
    parser.add_argument("--format", choices=("onnx", "torch_export"), default="onnx",
                        help="onnx (.onnx) or torch_export (.pt2, torch.export.load)")
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--stacks", type=int, default=None,
                        help="early exit after this many stacks (default: all)")
    parser.add_argument("--input-size", type=int, nargs="+", default=None,
                        help="H W (or one side) of the traced input (default: data.input_size)")
    parser.add_argument("--dynamic", action="store_true",
                        help="free batch, height and width (multiples of the size divisor)")
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> None:
    ckpt = load_checkpoint(args.checkpoint)
    source = f"checkpoint {args.checkpoint}"
    cfg = (load_config(args.config, args.overrides) if args.config is not None
           else config_from_checkpoint(ckpt, args.overrides, source=source))
    model = build_model(cfg.model)
    load_model_weights(model, ckpt, source=source)
    model.eval()
    size = args.input_size or [cfg.data.input_size]
    if len(size) not in (1, 2):
        raise ValueError(f"--input-size: expected H W or one side, got {size}")
    input_size = (size[0], size[-1])
    export = export_onnx if args.format == "onnx" else export_program
    path = export(model, args.output, stacks=args.stacks, input_size=input_size,
                  dynamic=args.dynamic)
    stacks = args.stacks or cfg.model.num_stacks
    print(f"wrote {path} ({args.format}, {stacks} of {cfg.model.num_stacks} stacks, input "
          f"{input_size[0]}x{input_size[1]}{', dynamic' if args.dynamic else ''})")


if __name__ == "__main__":
    sys.exit(main())
