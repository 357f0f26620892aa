#!/usr/bin/env python
"""Convert Visual Genome scene graphs to the aehg relation format (VG150 vocabulary).

Example:
    python tools/convert_vg.py --scene-graphs VG/scene_graphs.json --image-data VG/image_data.json \
        --vocabulary VG/VG-SGG-dicts-with-attri.json --object-alias VG/object_alias.txt \
        --predicate-alias VG/predicate_alias.txt --output data/vg

With an ``--output`` folder, ``vg150_train.json`` and ``vg150_val.json`` are written there (the
first 70 % of the images for training, ``--val-fraction`` for the rest); with an ``--output``
ending in ``.json``, one file with every image. The image ``file_name`` is ``VG_100K/<id>.jpg``
or ``VG_100K_2/<id>.jpg`` (from the image URL), so the image folder to give the dataset is the one
holding ``VG_100K`` and ``VG_100K_2`` (``data/vg/images`` in configs/vg_graph.yaml).

A broken input (missing file, not JSON, a record without a field or with a bad value) prints
one ``error: …`` line naming the file, the image / object / relationship id and the field, and
exits 2; ``--debug`` (or ``AEHG_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aehg.cli import add_debug_argument, run_tool
from aehg.data.visual_genome import convert_visual_genome, split_relation_data
from aehg.io import write_json


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Convert, write, print the report and return it.

    Raises:
        SystemExit: after an expected failure, with its exit code (2; 130 when interrupted);
            the report is the return value, so the code cannot be.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene-graphs", required=True, help="scene_graphs.json")
    parser.add_argument("--image-data", required=True, help="image_data.json (sizes, URLs)")
    parser.add_argument("--vocabulary", "--vocab", required=True,
                        help="VG-SGG-dicts-with-attri.json")
    parser.add_argument("--object-alias", default=None, help="object alias list")
    parser.add_argument("--predicate-alias", default=None, help="predicate alias list")
    parser.add_argument("--output", "--out", required=True,
                        help="a folder (train/val files) or a .json file (all images)")
    parser.add_argument("--val-fraction", type=float, default=0.3,
                        help="share of the images (the last ones) for validation")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    report: dict[str, int] = {}
    code = run_tool(lambda: report.update(_convert(args)), debug=args.debug)
    if code:
        raise SystemExit(code)
    print(json.dumps(report, indent=1))
    return report


def _convert(args: argparse.Namespace) -> dict[str, int]:
    data, report = convert_visual_genome(args.scene_graphs, args.image_data, args.vocabulary,
                                         args.object_alias, args.predicate_alias)
    out = Path(args.output)
    if out.suffix == ".json":
        write_json(out, data)
        return report
    train, val = split_relation_data(data, args.val_fraction)
    write_json(out / "vg150_train.json", train)
    write_json(out / "vg150_val.json", val)
    return {**report, "train_images": len(train["images"]), "val_images": len(val["images"])}


if __name__ == "__main__":
    main()
