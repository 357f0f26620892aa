#!/usr/bin/env python
"""Generate a synthetic pose or graph dataset as PNG images plus COCO-format JSON.

Example:
    python tools/make_synthetic.py --kind pose --root data/synth_pose --num-train 1000
    python tools/make_synthetic.py --config configs/demo_graph.yaml  # data.synthetic, data.root
    python tools/make_synthetic.py --kind graph --root data/collide --shared-centre-prob 0.3 \
        --reverse-prob 0.3 --multi-predicate-prob 0.3  # objects and links that share pixels

Nothing is written when ``root/spec.json`` already describes the same dataset, and nothing into
a folder aehg did not create (only a new or empty one, or one with its ``.aehg-synthetic`` marker
or ``spec.json``): a user's files are never replaced. An expected
failure prints one ``error: …`` line and exits 2; ``--debug`` (or ``AEHG_DEBUG=1``) shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing

from aehg.cli import add_debug_argument, run_tool
from aehg.config import SyntheticConfig, load_config
from aehg.data.synthetic import ensure_synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="a config file (data.synthetic, data.root)")
    parser.add_argument("--root", default=None, help="output folder (default: data.root)")
    types = typing.get_type_hints(SyntheticConfig)
    for f in dataclasses.fields(SyntheticConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str if f.name == "kind" else types[f.name]   # int, or float (probabilities)
        parser.add_argument(flag, type=kind, default=None,
                            choices=("pose", "graph", "single") if f.name == "kind" else None)
    add_debug_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)
              if getattr(args, f.name) is not None}
    syn = dataclasses.replace(cfg.data.synthetic, **values)
    root = args.root or cfg.data.root
    start = time.perf_counter()
    paths = ensure_synthetic(syn, root)
    print(f"{syn.kind}: {syn.num_train} train + {syn.num_val} val images of {syn.image_size}px "
          f"under {paths.root} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
