"""Ceiling of the scene-graph map layout: slots × output size on the Visual Genome sample
(docs/design.md "Slots").

The 100 real Visual Genome images of ``tests/data/visual_genome_sample`` are converted with the
VG150 rules (:func:`aehg.data.convert_visual_genome`); each image's ground truth is rendered by
:func:`aehg.evaluation.oracle_maps` as perfect maps (validation transform, ``--input`` input,
σ = 2 output pixels) for every (object slots, relation slots) and output size, decoded with
:func:`aehg.inference.decode.decode_predictions` (``decode_objects`` + ``build_graph``, default
``EvalConfig``) and scored with :func:`aehg.evaluation.evaluate_scene_graph` and
:func:`aehg.evaluation.object_recall`. Also printed: the seconds per image of render + decode
(one thread).

Example::

    python benchmarks/bench_graph_oracle.py                     # the docs table
    python benchmarks/bench_graph_oracle.py --sizes 128 --slots 1x1 3x6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch

from aehg.data.visual_genome import convert_visual_genome
from aehg.evaluation import oracle_scores

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "visual_genome_sample"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--input", type=int, default=512, help="network input side")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128],
                        help="output-map sides")
    parser.add_argument("--slots", nargs="+", default=["1x1", "1x6", "3x1", "3x6"],
                        help="object x relation slots")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # the decoders' NMS dilates with OpenCV
    s = args.sample
    data, _ = convert_visual_genome(
        s / "scene_graphs_first100.json", s / "image_data_first100.json",
        s / "VG-SGG-dicts-with-attri.json", s / "xu_object_alias.txt",
        s / "xu_predicate_alias.txt")
    print(f"VG150 sample: {len(data['images'])} images, {len(data['annotations'])} objects, "
          f"{len(data['relationships'])} relations; input {args.input}, 1 thread")
    header = (f"{'output':>6} {'slots':>5} {'objR':>6} {'R@20':>6} {'R@50':>6} {'R@100':>6} "
              f"{'ngR@20':>6} {'ngR@50':>6} {'ngR@100':>7} {'s/img':>6}")
    print(header)
    for size in args.sizes:
        for spec in args.slots:
            so, sr = (int(v) for v in spec.lower().split("x"))
            t0 = time.perf_counter()
            r = oracle_scores(data, input_size=args.input, output_size=size,
                              object_slots=so, relation_slots=sr)
            per = (time.perf_counter() - t0) / max(r["images"], 1)
            print(f"{size:>6} {spec:>5} {r['object_recall']:6.3f} {r['R@20']:6.3f} "
                  f"{r['R@50']:6.3f} {r['R@100']:6.3f} {r['ngR@20']:6.3f} {r['ngR@50']:6.3f} "
                  f"{r['ngR@100']:7.3f} {per:6.3f}")


if __name__ == "__main__":
    main()
