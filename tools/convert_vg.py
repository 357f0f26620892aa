#!/usr/bin/env python
"""Convert Visual Genome scene graphs to the aehg relation format (VG150 vocabulary).

Example:
    python tools/convert_vg.py --scene-graphs VG/scene_graphs.json --image-data VG/image_data.json \
        --vocabulary VG/VG-SGG-dicts-with-attri.json --object-alias VG/object_alias.txt \
        --predicate-alias VG/predicate_alias.txt --output data/vg

With an ``--output`` folder, ``vg150_train.json``, ``vg150_val.json`` and ``vg150_test.json``
are written there: the last 30 % of the images (``--test-fraction``, in file order) are the test
split, kept as is; ``--num-val`` images (5,000) drawn by ``--seed`` from the others are the
validation split (the one that selects ``best.pt``); the rest is the training split. With an
``--output`` ending in ``.json``, one file with every image. The image ``file_name`` is
``VG_100K/<id>.jpg`` or ``VG_100K_2/<id>.jpg`` (the folder of the image URL, as the two Visual
Genome image zips unpack), so the image folder to give the dataset is the one holding both
``VG_100K`` and ``VG_100K_2`` side by side, not merged (``data/vg/images`` in
configs/vg_graph.yaml).

A broken input (missing file, not JSON, a record without a field or with a bad value) prints
one ``error: …`` line naming the file, the image / object / relationship id and the field, and
exits 2; ``--debug`` (or ``AEHG_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aehg.cli import add_debug_argument, run_tool
from aehg.data.visual_genome import convert_visual_genome, split_train_val_test
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
    parser.add_argument("--test-fraction", "--val-fraction", type=float, default=0.3,
                        help="share of the images (the last ones) for the test split "
                             "(--val-fraction: its old name)")
    parser.add_argument("--num-val", type=int, default=5000,
                        help="validation images drawn from the training part")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation draw")
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
    splits = dict(zip(("train", "val", "test"), split_train_val_test(
        data, args.test_fraction, args.num_val, args.seed, num_val_key="--num-val",
        test_fraction_key="--test-fraction"), strict=True))
    for name, part in splits.items():
        write_json(out / f"vg150_{name}.json", part)
    return {**report, **{f"{name}_images": len(part["images"]) for name, part in splits.items()}}


if __name__ == "__main__":
    main()
