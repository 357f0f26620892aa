#!/usr/bin/env python
"""Convert Scene-Graph-Benchmark's preprocessed Visual Genome to the aehg relation format.

Example:
    python tools/convert_sgb.py --h5 datasets/vg/VG-SGG-with-attri.h5 \
        --dicts datasets/vg/VG-SGG-dicts-with-attri.json \
        --image-data datasets/vg/image_data.json --output data/vg_sgb

Writes ``train.json``, ``val.json`` (the first 5,000 training images, as SGB carves them),
``test.json`` and ``train_triplets.json`` into ``--output`` and prints the counts as JSON. The
image ``file_name`` is ``<image_id>.jpg``: give the dataset the folder holding every VG image
(SGB's ``VG_100K``). The semantics are those of SGB's ``VGDataset`` (``aehg.data.sgb``). A bad
input prints one ``error: …`` line naming the file, the dataset and the index, writes nothing
and exits 2. Needs h5py: ``pip install -e '.[sgb]'``.
"""

from __future__ import annotations

import argparse
import json
import sys

from aehg.cli import EXIT_ERROR, add_debug_argument, run_tool
from aehg.data.sgb import BOX_SCALE, convert_sgb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h5", required=True, help="VG-SGG-with-attri.h5")
    parser.add_argument("--dicts", required=True, help="VG-SGG-dicts-with-attri.json")
    parser.add_argument("--image-data", required=True, help="image_data.json")
    parser.add_argument("--output", "--out", required=True, help="output folder")
    parser.add_argument("--box-scale", type=int, default=BOX_SCALE,
                        help="read boxes_<scale> (1024 or 512)")
    parser.add_argument("--num-val", type=int, default=5000,
                        help="training images carved out for validation")
    parser.add_argument("--num-im", type=int, default=-1,
                        help="use only the first N images of each split (-1: all)")
    parser.add_argument("--keep-empty-rels", action="store_true",
                        help="keep images without relations (SGB: filter_empty_rels=False)")
    parser.add_argument("--keep-duplicate-rels", action="store_true",
                        help="training: keep every predicate of a pair "
                             "(SGB: filter_duplicate_rels=False)")
    parser.add_argument("--filter-non-overlap", action="store_true",
                        help="training: only relations whose boxes overlap")
    parser.add_argument("--seed", type=int, default=0, help="seed of the duplicate draw")
    parser.add_argument("--image-dir", default=None,
                        help="skip image_data.json entries without <image_id>.jpg here, as SGB")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_tool(lambda: _run(args), debug=args.debug, exit_codes={ImportError: EXIT_ERROR})


def _run(args: argparse.Namespace) -> None:
    report = convert_sgb(args.h5, args.dicts, args.image_data, args.output,
                         box_scale=args.box_scale, filter_empty_rels=not args.keep_empty_rels,
                         filter_duplicate_rels=not args.keep_duplicate_rels,
                         filter_non_overlap=args.filter_non_overlap, num_val=args.num_val,
                         num_im=args.num_im, seed=args.seed, image_dir=args.image_dir)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
