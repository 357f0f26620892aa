"""Where a pose model loses keypoint AP: oracle repairs of its predictions on the validation split.

Predicts the validation split of ``--config`` with ``--checkpoint`` (the config's eval
settings, overrides applied), matches every predicted person to the ground-truth person of
highest OKS and prints COCO keypoint AP for the predictions as they are and after one repair
at a time (docs/design.md §4, "The training prior"):

* ``oracle score``: each person scored by its best OKS (what ranking costs);
* ``small errors fixed``: the parts within ``--near`` px of their true place moved onto it
  (what sub-pixel localisation could still give);
* ``gross errors fixed``: the parts further away moved onto it, and of those only the parts
  that sit on another person's same part (grouping), and only occluded parts (v = 1).

Repairs touch only people whose best OKS exceeds ``--min-oks`` and parts labelled in the
ground truth. The script reads the images and runs the model once (seconds on a CPU for the
demo); it measures accuracy, not speed.

Usage:
    python benchmarks/pose_errors.py --config configs/demo_pose.yaml \\
        --checkpoint outputs/demo/demo_pose/best.pt [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import numpy as np
import torch

from aehg.checkpoint import load_checkpoint
from aehg.config import load_config
from aehg.data import build_dataset
from aehg.data.info import base_dataset
from aehg.evaluation import coco_results, with_training_prior
from aehg.evaluation.coco import evaluate as coco_evaluate
from aehg.inference import Predictor, predict_dataset

# One repair: (part index, error in px, predicted parts, true parts, other people's true parts)
# -> move this part onto the truth.
Repair = Callable[[int, float, np.ndarray, np.ndarray, list[np.ndarray]], bool]


def _oks(pred: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray) -> float:
    """COCO's OKS of one predicted person against one labelled person (parts with v > 0)."""
    vis = gt[:, 2] > 0
    if not vis.any():
        return 0.0
    d2 = ((pred[:, :2] - gt[:, :2]) ** 2).sum(1)
    e = d2 / (2 * (2 * sigmas) ** 2 * (area + np.spacing(1)))
    return float(np.exp(-e[vis]).mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--near", type=float, default=3.0, help="px: a 'small' error")
    ap.add_argument("--min-oks", type=float, default=0.5, help="repair only people above this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ckpt = load_checkpoint(args.checkpoint)
    cfg = with_training_prior(load_config(args.config, args.overrides), ckpt)
    predictor = Predictor(cfg, ckpt, device="cpu")
    dataset = build_dataset(cfg, "val")
    base = base_dataset(dataset)
    preds = predict_dataset(predictor.model, dataset, cfg)
    results = coco_results(preds, base, cfg.eval.missing_keypoints)
    image_ids = [p.image_id for p in preds]
    sigmas = np.asarray(base.oks_sigmas, dtype=np.float64)
    coco = base.coco

    def people(image_id: int) -> list[dict]:
        return coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))

    # Best ground-truth match of every result (analysis only: loops are fine here).
    matches = []
    for r in results:
        kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        cands = [(_oks(kp, np.asarray(g["keypoints"], np.float64).reshape(-1, 3), g["area"],
                       sigmas), g) for g in people(r["image_id"])]
        matches.append(max(cands, key=lambda t: t[0]) if cands else (0.0, None))

    def score(rows: list[dict], name: str) -> None:
        s = coco_evaluate(coco, rows, iou_type="keypoints", sigmas=base.oks_sigmas,
                          image_ids=image_ids)
        print(f"{name:44s} AP {s['AP']:.3f}  AP50 {s['AP50']:.3f}  AP75 {s['AP75']:.3f}  "
              f"AR {s['AR']:.3f}", flush=True)

    def repaired(rule: Repair) -> list[dict]:
        rows = copy.deepcopy(results)
        for r, (o, g) in zip(rows, matches, strict=True):
            if g is None or o <= args.min_oks:
                continue
            gt = np.asarray(g["keypoints"], np.float64).reshape(-1, 3)
            kp = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)
            others = [np.asarray(h["keypoints"], np.float64).reshape(-1, 3)
                      for h in people(r["image_id"]) if h["id"] != g["id"]]
            for c in np.flatnonzero(gt[:, 2] > 0):
                err = float(np.hypot(*(kp[c, :2] - gt[c, :2])))
                if rule(c, err, kp, gt, others):
                    kp[c, :2] = gt[c, :2]
            r["keypoints"] = kp.ravel().tolist()
        return rows

    def on_other_person(c: int, kp: np.ndarray, others: list[np.ndarray]) -> bool:
        return kp[c, 2] > 0 and any(
            o[c, 2] > 0 and np.hypot(*(kp[c, :2] - o[c, :2])) <= args.near for o in others)

    print(f"{args.checkpoint}: {len(results)} predicted people, "
          f"{len(coco.getAnnIds(imgIds=image_ids, iscrowd=False))} labelled, "
          f"{sum(o > args.min_oks for o, _ in matches)} with OKS > {args.min_oks}; "
          f"eval.pose_prior {cfg.eval.pose_prior}")
    score(results, "as predicted")
    oracle = copy.deepcopy(results)
    for r, (o, _) in zip(oracle, matches, strict=True):
        r["score"] = o
    score(oracle, "oracle score (best OKS)")
    near = args.near
    score(repaired(lambda c, e, kp, gt, oth: e <= near), f"small errors fixed (<= {near:g} px)")
    score(repaired(lambda c, e, kp, gt, oth: e > near), f"gross errors fixed (> {near:g} px)")
    score(repaired(lambda c, e, kp, gt, oth: e > near and on_other_person(c, kp, oth)),
          "  of which on another person's same part")
    score(repaired(lambda c, e, kp, gt, oth: e > near and gt[c, 2] == 1),
          "  of which occluded parts (v = 1)")


if __name__ == "__main__":
    main()
