#!/usr/bin/env python
"""Data loading speed: samples/s of one worker (the main process, one thread).

* COCO-style keypoints with training augmentation at 512×512 input / 128×128 output on the real
  sample (tests/data/coco_kp_ccby: 17 COCO images, 640 px on the long side);
* the synthetic pose and graph data at 128×128 input / 32×32 output;
* generation of 1,000 synthetic images of each kind at 128 px (the issue asks for < 60 s).

Prints the median over repeats. Example:
    python benchmarks/bench_data.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch

from aehg.config import AugmentConfig, SyntheticConfig
from aehg.data.coco import CocoKeypointDataset
from aehg.data.relations import RelationDataset
from aehg.data.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]
COCO_SAMPLE = ROOT / "tests" / "data" / "coco_kp_ccby"


def _rate(dataset, n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            dataset[i % len(dataset)]
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generate", type=int, default=1000, help="images per kind to generate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(f"threads: torch 1, OpenCV 1; {args.samples} samples x {args.repeats} repeats (median)")

    coco = CocoKeypointDataset(COCO_SAMPLE / "person_keypoints_ccby.json", COCO_SAMPLE / "images",
                               train=True, input_size=512, output_size=128,
                               augment=AugmentConfig())
    print(f"coco keypoints, train aug, 512 -> 128:  "
          f"{_rate(coco, args.samples, args.repeats):7.1f} samples/s per worker")
    coco_val = CocoKeypointDataset(COCO_SAMPLE / "person_keypoints_ccby.json",
                                   COCO_SAMPLE / "images", train=False, input_size=512,
                                   output_size=128)
    print(f"coco keypoints, val,       512 -> 128:  "
          f"{_rate(coco_val, args.samples, args.repeats):7.1f} samples/s per worker")

    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("pose", "graph"):
            cfg = SyntheticConfig(kind=kind, num_train=args.generate, num_val=1, image_size=128,
                                  num_parts=7)
            start = time.perf_counter()
            paths = ensure_synthetic(cfg, Path(tmp) / kind)
            took = time.perf_counter() - start
            print(f"synthetic {kind}: generated {args.generate} + 1 images of 128 px in "
                  f"{took:5.1f} s")
            cls = CocoKeypointDataset if kind == "pose" else RelationDataset
            ds = cls(paths.train_json, paths.train_images, train=True, input_size=128,
                     output_size=32)
            print(f"synthetic {kind}, train aug, 128 -> 32:  "
                  f"{_rate(ds, args.samples * 5, args.repeats):7.1f} samples/s per worker")


if __name__ == "__main__":
    main()
