"""Speed of evaluation and inference post-processing.

* Scene-graph R@K / ngR@K / mR@K (K = 20, 50, 100) over 500 images with 25 ground-truth
  objects and 20 relations each, and 60 predicted objects with 300 scored triplets each (the
  size of a VG150 SGGen evaluation image).
* COCO keypoint evaluation (pycocotools) of 17-part results for 500 images with 10 people.
* decode_predictions of a batch of 8 pose maps (17×128×128, 1-D tags) back to image pixels.

Prints the median over repeats, one thread.

Usage:
    python benchmarks/bench_eval.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io

import cv2
import numpy as np
import torch
from timing import median_ms  # benchmarks/timing.py, beside this script

from aehg.config import EvalConfig
from aehg.evaluation.coco import evaluate as coco_evaluate
from aehg.evaluation.scene_graph import evaluate as sg_evaluate
from aehg.inference import decode_predictions
from aehg.models import ObjectMaps, StackOutput


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 500, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(10, 200, (n, 2))], 1)


def _scene_graphs(rng: np.random.Generator, images: int):
    gts, preds = [], []
    for _ in range(images):
        gb = _boxes(rng, 25)
        gl = rng.integers(0, 150, 25)
        pairs = rng.choice(25 * 25, 20, replace=False)
        gr = np.stack([pairs // 25, pairs % 25, rng.integers(0, 50, 20)], 1)
        gts.append({"boxes": gb, "labels": gl, "relations": gr})
        pb = np.concatenate([gb + rng.normal(0, 5, gb.shape), _boxes(rng, 35)])
        pl = np.concatenate([gl, rng.integers(0, 150, 35)])
        pr = np.stack([rng.integers(0, 60, 300), rng.integers(0, 60, 300),
                       rng.integers(0, 50, 300)], 1)
        pr[:20] = gr
        preds.append({"boxes": pb, "labels": pl, "relations": pr,
                      "relation_scores": rng.uniform(size=300)})
    return gts, preds


def _coco(rng: np.random.Generator, images: int, people: int):
    imgs, anns, results = [], [], []
    for i in range(images):
        imgs.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(people):
            kp = np.concatenate([rng.uniform(50, 400, (17, 2)), np.full((17, 1), 2)], 1)
            x0, y0 = kp[:, :2].min(0)
            x1, y1 = kp[:, :2].max(0)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "iscrowd": 0, "num_keypoints": 17, "area": float((x1 - x0) * (y1 - y0)),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "keypoints": kp.ravel().tolist()})
            det = kp.copy()
            det[:, :2] += rng.normal(0, 3, (17, 2))
            results.append({"image_id": i + 1, "category_id": 1, "score": float(rng.uniform()),
                            "keypoints": det.ravel().tolist()})
    gt = {"images": imgs, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)],
                          "skeleton": []}]}
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # the decoders' NMS dilates with OpenCV
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median over {args.repeats} repeats")

    gts, preds = _scene_graphs(rng, 500)
    ms = median_ms(lambda: sg_evaluate(gts, preds), args.repeats)
    print(f"scene-graph R@K/ngR@K/mR@K, 500 images (25 objects, 20 relations; 60 objects, "
          f"300 triplets predicted): {ms:.1f} ms ({ms / 500:.3f} ms per image)")

    gt, results = _coco(rng, 500, 10)

    def coco() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_evaluate(gt, results, verbose=False)

    ms = median_ms(coco, args.repeats)
    print(f"COCO keypoint eval (pycocotools), 500 images x 10 people: {ms:.1f} ms")

    b, c, h, w = 8, 17, 128, 128
    gen = torch.Generator().manual_seed(0)
    heat = torch.rand(b, c, h, w, generator=gen) * 0.2
    heat.view(b, c, -1)[:, :, torch.randint(0, h * w, (10,), generator=gen)] = 0.9  # 10 people
    tags = torch.randn(b, c, 1, h, w, generator=gen)
    maps = StackOutput(ObjectMaps(heat, tags), None)
    metas = [{"transform": np.array([[0.2, 0, 0], [0, 0.2, 0]]), "orig_size": (480, 640)}
             for _ in range(b)]
    ms = median_ms(lambda: decode_predictions(maps, metas, EvalConfig()), args.repeats)
    print(f"decode_predictions, batch {b}, {c}x{h}x{w} maps, ~10 people each: {ms:.1f} ms "
          f"({ms / b:.1f} ms per image)")


if __name__ == "__main__":
    main()
