#!/usr/bin/env python
"""Dense vs sparse training targets: bytes per sample and data-loader samples per second.

Two settings, each on the sample data in tests/data with training augmentation:

* COCO pose: the data settings of ``configs/coco_ae.yaml`` (512 → 128, 17 parts, σ 2, 30 people)
  on tests/data/coco_kp_ccby (17 real COCO images);
* Visual Genome: the settings of ``configs/vg_graph.yaml`` (512 → 128, 150 classes with a shared
  tag, 50 predicates, boxes, 64 objects, 128 links) on the VG150 conversion of
  tests/data/visual_genome_sample (100 real annotations, which hold no pixels: drawn on grey
  images of their sizes).

Per setting and target kind (dense: ``build_targets``' maps, built in the worker; sparse: peak
lists and mask bits, drawn on the device by :func:`aehg.data.render.render_targets`) it prints
the mean bytes per sample (targets alone and with the image), the samples per second of a
data loader (dataset + collate, ``--workers`` worker processes, batches of ``--batch``) and, for
sparse, the time :func:`render_targets` takes per batch on this machine's CPU (on a GPU it runs
on the device). Dense and sparse alternate in one process; medians over ``--repeats``.

Example::

    python benchmarks/bench_targets.py --repeats 3 --batches 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from aehg.config import load_config
from aehg.data import CocoKeypointDataset, RelationDataset, convert_visual_genome
from aehg.data.loader import collate
from aehg.data.render import TargetSpec, render_targets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "tests" / "data" / "coco_kp_ccby"
VG = ROOT / "tests" / "data" / "visual_genome_sample"


def _nbytes(sample: dict, with_image: bool) -> int:
    return sum(v.numel() * v.element_size() for k, v in sample.items()
               if torch.is_tensor(v) and (with_image or k != "image"))


def _coco(cfg, sparse: bool) -> CocoKeypointDataset:
    d = cfg.data
    return CocoKeypointDataset(COCO / "person_keypoints_ccby.json", COCO / "images", train=True,
                               input_size=d.input_size, output_size=d.output_size,
                               sigma=d.sigma, max_instances=d.max_instances,
                               tag_per_class=cfg.model.tag_per_class, augment=d.augment,
                               sparse_targets=sparse)


def _vg_data(tmp: Path) -> Path:
    data, _ = convert_visual_genome(VG / "scene_graphs_first100.json",
                                    VG / "image_data_first100.json",
                                    VG / "VG-SGG-dicts-with-attri.json",
                                    VG / "xu_object_alias.txt", VG / "xu_predicate_alias.txt")
    for im in data["images"]:
        path = tmp / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((im["height"], im["width"], 3), 128, np.uint8))
    path = tmp / "vg150.json"
    path.write_text(json.dumps(data))
    return path


def _vg(cfg, sparse: bool, json_path: Path) -> RelationDataset:
    d, m = cfg.data, cfg.model
    return RelationDataset(json_path, json_path.parent, train=True, input_size=d.input_size,
                           output_size=d.output_size, sigma=d.sigma,
                           max_instances=d.max_instances, tag_per_class=m.tag_per_class,
                           max_links=d.max_links, augment=d.augment,
                           object_slots=m.object_slots, relation_slots=m.relation_slots,
                           sparse_targets=sparse)


def _loader_rate(ds, batch: int, batches: int, workers: int) -> float:
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers,
                        collate_fn=collate, drop_last=True)
    start = time.perf_counter()
    n = 0
    for k, b in enumerate(loader):
        n += len(b["meta"])
        if k + 1 == batches:
            break
    return n / (time.perf_counter() - start)


def _setting(name: str, cfg, make, args) -> None:
    dense_ds, sparse_ds = make(False), make(True)
    n = min(len(dense_ds), args.samples)
    size = {}
    for kind, ds in (("dense", dense_ds), ("sparse", sparse_ds)):
        samples = [ds[i] for i in range(n)]
        size[kind] = (statistics.mean(_nbytes(s, False) for s in samples),
                      statistics.mean(_nbytes(s, True) for s in samples))
    rates: dict[str, list[float]] = {"dense": [], "sparse": []}
    for _ in range(args.repeats):                      # alternate: fair on a shared machine
        for kind, ds in (("dense", dense_ds), ("sparse", sparse_ds)):
            rates[kind].append(_loader_rate(ds, args.batch, args.batches, args.workers))
    spec = TargetSpec.from_config(cfg)
    batch = collate([sparse_ds[i % len(sparse_ds)] for i in range(args.batch)])
    render_ms = median_ms(lambda: render_targets(batch, spec), args.repeats)
    print(f"{name} ({n} samples for the sizes):")
    for kind in ("dense", "sparse"):
        t, whole = size[kind]
        print(f"  {kind:6s}: targets {t / 2**20:8.3f} MiB/sample ({t:11,.0f} B), with image "
              f"{whole / 2**20:7.3f} MiB; loader {statistics.median(rates[kind]):6.2f} "
              f"samples/s")
    print(f"  targets {size['dense'][0] / size['sparse'][0]:.0f}x smaller, loader "
          f"{statistics.median(rates['sparse']) / statistics.median(rates['dense']):.2f}x "
          f"faster; render_targets on the CPU: {render_ms:.1f} ms per batch of {args.batch}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="samples per loader batch")
    parser.add_argument("--batches", type=int, default=3, help="loader batches per repeat")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes")
    parser.add_argument("--samples", type=int, default=17, help="samples for the sizes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(f"threads: torch 1, OpenCV 1; loader: {args.workers} workers, batch {args.batch}, "
          f"{args.batches} batches x {args.repeats} repeats (median), training augmentation")
    coco_cfg = load_config(ROOT / "configs" / "coco_ae.yaml")
    _setting("COCO pose, configs/coco_ae.yaml", coco_cfg, lambda s: _coco(coco_cfg, s), args)
    vg_cfg = load_config(ROOT / "configs" / "vg_graph.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        json_path = _vg_data(Path(tmp))
        _setting("Visual Genome, configs/vg_graph.yaml", vg_cfg,
                 lambda s: _vg(vg_cfg, s, json_path), args)


if __name__ == "__main__":
    main()
