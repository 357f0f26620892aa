#!/usr/bin/env python
"""Convert a released hourglass checkpoint into an aehg checkpoint (weights and config).

Example:
    python tools/convert_weights.py --from pose-ae-train checkpoint.pth.tar --out ae_coco.pt
    python tools/convert_weights.py --from pytorch_stacked_hourglass checkpoint.pt \\
        --out hg8_mpii.pt
    python tools/convert_weights.py --from mmpose-ae \\
        hourglass_ae_coco_512x512-90af499f_20210920.pth --out mmpose_ae_coco.pt \\
        --config configs/coco_ae.yaml data.root=/data/coco

Sources: ``pose-ae-train`` (princeton-vl/pose-ae-train's COCO AE network),
``pytorch_stacked_hourglass`` (princeton-vl/pytorch_stacked_hourglass's MPII models, 2 or 8
stacks) and ``mmpose-ae`` (mmpose's ``hourglass_ae_coco_512x512``). The config is ``--config``
(default: ``configs/coco_ae.yaml`` for the COCO sources, ``configs/mpii_hourglass.yaml`` for
MPII) with the stack count and input normalisation the checkpoint implies, then the
``key=value`` overrides. The output loads with ``torch.load(weights_only=True)``; give it to
``tools/infer.py`` and ``tools/eval.py`` as it is. The mapping is ``aehg.models.convert``'s table.
A checkpoint of another kind, a missing, unexpected or mis-shaped key prints one ``error: …``
line naming the file and the key and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aehg.cli import add_debug_argument, run_tool
from aehg.models.convert import SOURCES, convert_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = {"pose-ae-train": "coco_ae.yaml", "pytorch_stacked_hourglass":
                  "mpii_hourglass.yaml", "mmpose-ae": "coco_ae.yaml"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="which code released the checkpoint")
    parser.add_argument("checkpoint", help="the released checkpoint file")
    parser.add_argument("--out", "--output", dest="output", required=True,
                        help="the aehg checkpoint to write")
    parser.add_argument("--config", default=None,
                        help="YAML config of the converted model (default: per source)")
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    # Intermixed: the checkpoint, the options and the overrides come in any order.
    args = parser.parse_intermixed_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> None:
    config = args.config if args.config is not None else CONFIGS / DEFAULT_CONFIG[args.source]
    report = convert_checkpoint(args.source, args.checkpoint, args.output, config,
                                args.overrides)
    unused = report["unused"]
    print(f"{report['source']}: {report['tensors']} tensors ({report['parameters'] / 1e6:.2f} M "
          f"parameters) -> {report['output']}; config {config} + "
          f"{' '.join(report['overrides'])}; {len(unused)} known-unused source tensor(s)")


if __name__ == "__main__":
    sys.exit(main())
