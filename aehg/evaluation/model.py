"""Evaluating a model end to end: predict a validation set, map back to the pictures, score
(docs/design.md §6).

:func:`evaluate_model` is what the training engine calls for periodic validation;
:func:`evaluate_checkpoint` is the job behind ``tools/eval.py``.

Example:
    >>> metrics = evaluate_model(model, val_loader, cfg)   # {"AP": …} or {"R@50": …}
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aehg.checkpoint import load_checkpoint, load_model_weights
from aehg.config import Config
from aehg.data.coco import CocoBase, CocoKeypointDataset, DataFormatError
from aehg.data.info import base_dataset, data_info
from aehg.data.loader import build_dataset
from aehg.data.relations import RelationDataset
from aehg.evaluation.coco import boxes_to_results, keypoints_to_results
from aehg.evaluation.coco import evaluate as coco_evaluate
from aehg.evaluation.scene_graph import evaluate as scene_graph_evaluate
from aehg.evaluation.scene_graph import object_recall
from aehg.export import graphs_to_relation_results
from aehg.inference import Prediction, predict_dataset, resolve_device
from aehg.io import write_json
from aehg.models import build_model

__all__ = ["coco_results", "evaluate_checkpoint", "evaluate_model", "score_predictions"]


def coco_results(predictions: Sequence[Prediction], dataset: Dataset) -> list[dict[str, Any]]:
    """COCO results of the predictions: keypoints for pose, boxes for objects."""
    base = base_dataset(dataset)
    out: list[dict[str, Any]] = []
    for p in predictions:
        if p.image_id is None:
            raise ValueError("predictions: every prediction needs an image_id for COCO results")
        if isinstance(base, CocoKeypointDataset):
            out += keypoints_to_results(p.keypoints, p.scores, p.image_id, base.category_id)
        elif p.boxes is not None:
            out += boxes_to_results(p.boxes, p.scores, p.labels, p.image_id, base.cat_ids)
    return out


def _check_eval_fields(base: CocoBase, image_ids: Sequence[Any]) -> None:
    """The fields COCOeval reads from every ground-truth annotation of the scored images are
    there (training does not need them), so that a missing one is named, not a KeyError."""
    pose = isinstance(base, CocoKeypointDataset)
    need = ("bbox", "area", "keypoints", "num_keypoints") if pose else ("bbox", "area")
    for img_id in image_ids:
        for ann in base.coco.imgToAnns.get(img_id, []):
            if pose and ann["category_id"] != base.category_id:
                continue
            missing = [k for k in need if k not in ann]
            if missing:
                raise DataFormatError(
                    f"{base.json_path}: annotation id {ann['id']!r} (image {img_id!r}): missing "
                    f"field {missing[0]!r}, which COCO {'keypoint' if pose else 'box'} "
                    f"evaluation needs for every annotation ({', '.join(need)})")


def score_predictions(predictions: Sequence[Prediction], dataset: Dataset, cfg: Config, *,
                      verbose: bool = False) -> dict[str, float]:
    """Score predictions against a dataset's annotations.

    Pose: COCO keypoint ``AP, AP50, AP75, APm, APl, AR, …`` over the predicted images (OKS
    sigmas of the dataset). Relations: ``R@K``, ``ngR@K``, ``mR@K`` for ``cfg.eval.recall_ks``,
    ``object_recall`` (ground-truth objects matched by a same-class prediction with IoU ≥ 0.5)
    and, when the model regresses boxes, COCO box ``object_AP`` / ``object_AP50``. Only the
    predicted images count: an image without a prediction (skipped as unreadable) is neither
    in the COCO image ids nor in the recall.

    Raises:
        DataFormatError: no prediction at all (an empty evaluation set), or a ground-truth
            annotation lacks a field the COCO evaluation reads (names the file and the id).
        ValueError: an image is predicted more than once.
    """
    base = base_dataset(dataset)
    image_ids = [p.image_id for p in predictions]
    if not image_ids:
        raise DataFormatError(
            f"{base.json_path}: no image to evaluate ({len(base.ids)} images in the set, "
            f"{len(base.skipped)} skipped as unreadable): an empty evaluation set has no score")
    if len(set(image_ids)) != len(image_ids):
        twice = next(i for i, n in Counter(image_ids).items() if n > 1)
        raise ValueError(f"predictions: image id {twice} of {base.json_path} is predicted more "
                         f"than once (each image must be scored once)")
    if isinstance(base, CocoKeypointDataset):
        _check_eval_fields(base, image_ids)
        results = coco_results(predictions, base)
        return coco_evaluate(base.coco, results, iou_type="keypoints",
                             sigmas=base.oks_sigmas, image_ids=image_ids, verbose=verbose)
    if not isinstance(base, RelationDataset):
        raise TypeError(f"dataset: expected a CocoKeypointDataset or RelationDataset, got "
                        f"{type(base).__name__}")
    gts = [{"boxes": base.boxes(i), "labels": base.labels(i), "relations": base.links(i)}
           for i in image_ids]
    sg = [p.scene_graph() for p in predictions]
    out = scene_graph_evaluate(gts, sg, ks=cfg.eval.recall_ks)
    out["object_recall"] = object_recall(gts, sg)
    if predictions[0].boxes is not None:
        _check_eval_fields(base, image_ids)
        stats = coco_evaluate(base.coco, coco_results(predictions, base), iou_type="bbox",
                              image_ids=image_ids, verbose=verbose)
        out["object_AP"] = stats["AP"]
        out["object_AP50"] = stats["AP50"]
    if verbose:
        width = max(len(k) for k in out)
        print("\n".join(f"{k:<{width}}  {v:.4f}" for k, v in out.items()))
    return out


def evaluate_model(model: nn.Module, data: Dataset | DataLoader, cfg: Config, *,
                   device: str | torch.device | None = None, verbose: bool = False
                   ) -> dict[str, float]:
    """Predict a validation dataset/loader and score it (for periodic validation).

    ``score_predictions(predict_dataset(model, data, cfg), data, cfg)`` plus the count of
    skipped images. With a DataLoader over a DistributedSampler each rank scores only its share
    of the images: call it on one rank with a non-distributed loader for the full figure.

    Returns:
        Pose: ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl`` (fractions). Relations:
        ``R@K, ngR@K, mR@K`` per K, ``object_recall`` and, with boxes, ``object_AP``,
        ``object_AP50``. Both: ``skipped_images``, the images of the set left out as
        unreadable (``data.skip_unreadable``; 0 otherwise). ``train.best_metric: auto`` keeps
        the checkpoint with the best ``AP`` (pose) or ``ngR@20`` (relations).

    Raises:
        DataFormatError: every image was skipped (an empty evaluation set); see also
            :func:`score_predictions`.
    """
    preds = predict_dataset(model, data, cfg, device=device)
    metrics = score_predictions(preds, data, cfg, verbose=verbose)
    metrics["skipped_images"] = len(base_dataset(data).skipped)
    return metrics


def evaluate_checkpoint(cfg: Config, checkpoint: str | os.PathLike[str],
                        output_dir: str | os.PathLike[str] | None = None, *,
                        device: str | torch.device | None = None, verbose: bool = True,
                        progress: bool = True) -> dict[str, float]:
    """Evaluate a checkpoint on the validation split of ``cfg`` and write the results.

    Writes ``results.json`` (COCO keypoint results for pose; the relation-results JSON of
    docs/design.md §5 for relations) and ``metrics.json`` into ``output_dir`` (default: ``eval/``
    beside the checkpoint) and prints the metric table when ``verbose``.

    ``metrics.json`` includes ``skipped_images``: validation images left out as unreadable
    (``data.skip_unreadable``), also printed when there are any.

    Raises:
        FileNotFoundError: missing checkpoint or data.
        ValueError: unreadable checkpoint, or one of another architecture (names the keys);
            ``DataFormatError`` for broken annotations or an empty evaluation set.
    """
    ckpt = load_checkpoint(checkpoint)
    model = build_model(cfg.model)
    load_model_weights(model, ckpt, source=f"checkpoint {checkpoint}")
    dev = resolve_device(device) if device is not None else \
        resolve_device(cfg.train.device, key="train.device")
    model = model.to(dev, memory_format=torch.channels_last).eval()  # see forward_maps
    dataset = build_dataset(cfg, "val")
    preds = predict_dataset(model, dataset, cfg, device=dev, progress=progress)
    metrics = score_predictions(preds, dataset, cfg, verbose=verbose)
    metrics["skipped_images"] = len(dataset.skipped)
    if verbose and dataset.skipped:
        print(f"skipped {len(dataset.skipped)} unreadable image(s) of {dataset.json_path} "
              f"(data.skip_unreadable): scored {len(preds)} of "
              f"{len(preds) + len(dataset.skipped)} images")
    out_dir = Path(output_dir) if output_dir is not None else Path(checkpoint).parent / "eval"
    if cfg.data.kind == "pose":
        results: Any = coco_results(preds, dataset)
    else:
        info = data_info(cfg, dataset)
        results = graphs_to_relation_results([p.graph for p in preds], info.categories,
                                             info.predicate_categories)
    write_json(out_dir / "results.json", results)
    write_json(out_dir / "metrics.json", metrics, indent=2)
    if verbose:
        print(f"wrote {out_dir / 'results.json'} and {out_dir / 'metrics.json'}")
    return metrics
