"""COCO evaluation: predictions → COCO results JSON → ``pycocotools.cocoeval.COCOeval``.

Keypoint AP uses the OKS sigmas of the config (any keypoint set); boxes use bbox AP.

Example:
    >>> results = keypoints_to_results(kpts, scores, image_id=785)   # kpts (N, C, 3) image px
    >>> stats = evaluate("person_keypoints_val2017.json", results)  # prints the table
    >>> stats["AP"]
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from aehg.io import read_json
from aehg.keypoints import COCO_OKS_SIGMAS

__all__ = [
    "BBOX_STAT_NAMES",
    "KEYPOINT_STAT_NAMES",
    "boxes_to_results",
    "evaluate",
    "format_table",
    "keypoints_to_results",
    "load_coco",
]

# Order of COCOeval.stats for each iou type.
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BBOX_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
                   "ARm", "ARl")


def load_coco(coco_gt: str | os.PathLike[str] | COCO | Mapping[str, Any],
              verbose: bool = False) -> COCO:
    """A ``COCO`` object from a path, an in-memory dataset dict, or a ``COCO`` (returned as is).

    Raises:
        FileNotFoundError: the annotation file does not exist.
        ValueError: the file is not a COCO JSON.
    """
    if isinstance(coco_gt, COCO):
        return coco_gt
    if isinstance(coco_gt, Mapping):
        dataset = dict(coco_gt)
        where = "coco_gt (dict)"
    else:
        path = Path(coco_gt)
        dataset = read_json(path, "COCO annotation")
        where = str(path)
    missing = [k for k in ("images", "annotations", "categories") if k not in dataset]
    if missing:
        raise ValueError(f"{where}: not a COCO annotation file, missing {', '.join(missing)}")
    coco = COCO()
    coco.dataset = dataset
    with _maybe_quiet(verbose):
        coco.createIndex()
    return coco


MISSING_KEYPOINTS = ("centroid", "zero")


def keypoints_to_results(keypoints: np.ndarray, scores: np.ndarray, image_id: int,
                         category_id: int = 1, missing: str = "centroid"
                         ) -> list[dict[str, Any]]:
    """COCO keypoint results for the people of one image.

    COCOeval's OKS compares every ground-truth keypoint with the predicted one of the same part,
    whatever its score, so where an absent part is written matters: ``"centroid"`` puts it at
    the mean of the person's detected parts (score 0; pose-ae-train's convention), ``"zero"``
    at the image origin (0, 0).

    Args:
        keypoints: x, y, score per part in original-image pixel coordinates (score 0 = absent).
        scores: one score per person (ranks detections in COCOeval).
        image_id: the COCO image id.
        category_id: the COCO category (1 = person).
        missing: where absent parts go: "centroid" or "zero".

    Shapes:
        keypoints: (N, C, 3), scores: (N,)
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if keypoints.size == 0:
        return []
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints: expected shape (N, C, 3), got {keypoints.shape}")
    if scores.shape[0] != keypoints.shape[0]:
        raise ValueError(f"scores: expected {keypoints.shape[0]} entries (one per person), "
                         f"got {scores.shape[0]}")
    if missing not in MISSING_KEYPOINTS:
        raise ValueError(f"missing: expected one of {MISSING_KEYPOINTS}, got {missing!r}")
    absent = keypoints[:, :, 2] <= 0
    if missing == "centroid":
        present = ~absent
        count = np.maximum(present.sum(1, keepdims=True), 1)
        centre = (keypoints[:, :, :2] * present[..., None]).sum(1) / count       # (N, 2)
        keypoints = keypoints.copy()
        keypoints[:, :, :2] = np.where(absent[..., None], centre[:, None], keypoints[:, :, :2])
    else:
        keypoints = np.where(absent[..., None], 0.0, keypoints)
    flat = keypoints.reshape(len(keypoints), -1).tolist()
    return [{"image_id": int(image_id), "category_id": int(category_id), "keypoints": kp,
             "score": float(s)} for kp, s in zip(flat, scores.tolist(), strict=True)]


def boxes_to_results(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, image_id: int,
                     label_to_category: Sequence[int] | Mapping[int, int] | None = None
                     ) -> list[dict[str, Any]]:
    """COCO bbox results (``bbox`` as x, y, w, h) for the objects of one image.

    Args:
        boxes: x1, y1, x2, y2 in original-image pixel coordinates.
        scores: detection scores.
        labels: contiguous class indices.
        image_id: the COCO image id.
        label_to_category: maps a class index to its COCO ``category_id`` (None: identity).

    Shapes:
        boxes: (N, 4), scores: (N,), labels: (N,)
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"boxes, scores, labels: expected the same length, got {len(boxes)}, "
                         f"{len(scores)}, {len(labels)}")
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
    if label_to_category is None:
        cats = labels.tolist()
    else:
        try:
            cats = [int(label_to_category[int(lab)]) for lab in labels]
        except (IndexError, KeyError) as exc:
            raise ValueError(f"labels: class {exc} has no COCO category in "
                             f"label_to_category") from None
    return [{"image_id": int(image_id), "category_id": c, "bbox": b, "score": float(s)}
            for b, c, s in zip(xywh, cats, scores.tolist(), strict=True)]


@contextlib.contextmanager
def _maybe_quiet(verbose: bool):
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _load_results(results: str | os.PathLike[str] | Iterable[Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        loaded = read_json(path, "results")
        if not isinstance(loaded, list):
            raise ValueError(f"{path}: expected a JSON list of COCO results, "
                             f"got {type(loaded).__name__}")
        return loaded
    return [dict(r) for r in results]


def _check_results(results: list[dict[str, Any]], coco: COCO, iou_type: str,
                   num_keypoints: int | None) -> None:
    field = "keypoints" if iou_type == "keypoints" else "bbox"
    img_ids = set(coco.getImgIds())
    cat_ids = set(coco.getCatIds())
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score", field) if k not in r]
        if missing:
            raise ValueError(f"results[{i}]: missing key(s) {', '.join(missing)}")
        if r["image_id"] not in img_ids:
            raise ValueError(f"results[{i}]: image_id {r['image_id']} is not in the ground "
                             f"truth")
        if r["category_id"] not in cat_ids:
            raise ValueError(f"results[{i}]: category_id {r['category_id']} is not in the "
                             f"ground truth (categories {sorted(cat_ids)})")
        n = len(r[field])
        expected = 3 * num_keypoints if field == "keypoints" and num_keypoints else 4
        if field == "bbox" and n != 4 or field == "keypoints" and num_keypoints and n != expected:
            raise ValueError(f"results[{i}]: {field}: expected {expected} numbers, got {n}")


def _num_keypoints(coco: COCO) -> int | None:
    for cat in coco.dataset.get("categories", []):
        if cat.get("keypoints"):
            return len(cat["keypoints"])
    for ann in coco.dataset.get("annotations", []):
        if ann.get("keypoints"):
            return len(ann["keypoints"]) // 3
    return None


def format_table(stats: Mapping[str, float]) -> str:
    """One-line-per-metric table of a stats dict, in the given order."""
    width = max((len(k) for k in stats), default=0)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in stats.items())


def evaluate(coco_gt: str | os.PathLike[str] | COCO | Mapping[str, Any],
             results: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
             iou_type: str = "keypoints", sigmas: Sequence[float] | None = None,
             image_ids: Iterable[int] | None = None, verbose: bool = True) -> dict[str, float]:
    """Run COCOeval and return its summary numbers by name.

    Args:
        coco_gt: ground truth: a COCO JSON path, its loaded dict, or a ``COCO`` object.
        results: COCO results: a JSON path or a list of dicts (``image_id``, ``category_id``,
            ``score`` and ``keypoints`` [x, y, s]·C or ``bbox`` [x, y, w, h]).
        iou_type: "keypoints" or "bbox".
        sigmas: per-keypoint OKS sigmas (one per keypoint of the ground-truth category);
            None: COCO's person sigmas (17 keypoints only).
        image_ids: evaluate only these images (default: every ground-truth image).
        verbose: print pycocotools' progress and the standard summary table.

    Returns:
        For keypoints ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl``; for boxes
        ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` plus ``AR`` (=
        AR100). Values are fractions; -1 where COCOeval has no ground truth (e.g. no large
        person); all 0 when there is no result at all.
    """
    if iou_type not in ("keypoints", "bbox"):
        raise ValueError(f"iou_type: expected 'keypoints' or 'bbox', got {iou_type!r}")
    coco = load_coco(coco_gt, verbose=verbose)
    dets = _load_results(results)
    names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else BBOX_STAT_NAMES
    num_kpts = _num_keypoints(coco) if iou_type == "keypoints" else None
    if iou_type == "keypoints":
        if sigmas is None:
            if num_kpts not in (None, len(COCO_OKS_SIGMAS)):
                raise ValueError(f"sigmas: the ground truth has {num_kpts} keypoints; give "
                                 f"one OKS sigma per keypoint (data.oks_sigmas)")
            sigmas = COCO_OKS_SIGMAS
        sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if num_kpts is not None and len(sigmas) != num_kpts:
            raise ValueError(f"sigmas: expected {num_kpts} values (one per keypoint of the "
                             f"ground truth), got {len(sigmas)}")
    _check_results(dets, coco, iou_type, num_kpts)
    if not dets:
        if verbose:
            print("COCO evaluation: no results, every metric is 0")
        out = dict.fromkeys(names, 0.0)
    else:
        with _maybe_quiet(verbose):
            coco_dt = coco.loadRes(dets)
            ev = COCOeval(coco, coco_dt, iouType=iou_type)
            if iou_type == "keypoints":
                ev.params.kpt_oks_sigmas = sigmas
            if image_ids is not None:
                ev.params.imgIds = sorted({int(i) for i in image_ids})
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out = {name: float(v) for name, v in zip(names, ev.stats, strict=True)}
    if iou_type == "bbox":
        out["AR"] = out["AR100"]
    return out
