"""Evaluating a model end to end: predict a validation set, map back to the pictures, score
(docs/design.md §6).

:func:`evaluate_model` is what the training engine calls for periodic validation;
:func:`evaluate_checkpoint` is the job behind ``tools/eval.py``.

Example:
    >>> metrics = evaluate_model(model, val_loader, cfg)   # {"AP": …} or {"R@50": …}
"""

from __future__ import annotations

import copy
import functools
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aehg.checkpoint import load_checkpoint, load_model_weights
from aehg.config import Config
from aehg.data.coco import CocoBase, CocoKeypointDataset, DataFormatError, load_coco_json
from aehg.data.info import base_dataset, data_info
from aehg.data.loader import build_dataset
from aehg.data.mpii import MpiiDataset
from aehg.data.relations import RelationDataset
from aehg.data.sgb import TRAIN_TRIPLETS_FILE, load_train_triplets
from aehg.data.synthetic import ensure_synthetic
from aehg.evaluation.coco import boxes_to_results, keypoints_to_results
from aehg.evaluation.coco import evaluate as coco_evaluate
from aehg.evaluation.pckh import score_single_pose, single_pose_results
from aehg.evaluation.scene_graph import evaluate as scene_graph_evaluate
from aehg.evaluation.scene_graph import (
    object_recall,
    per_predicate_recall,
    predicate_recall_table,
)
from aehg.export import graphs_to_relation_results, write_sgb_custom_prediction
from aehg.inference import Prediction, fit_pose_prior, predict_dataset, resolve_device
from aehg.inference.predictor import check_checkpoint_input, with_checkpoint_prior
from aehg.io import write_json
from aehg.models import build_model

__all__ = ["METRICS_FILE", "PREDICATE_RECALL_FILE", "RESULTS_FILE", "coco_results",
           "evaluate_checkpoint", "evaluate_model", "format_relation_metrics",
           "predicate_recall", "score_predictions", "train_triplets", "with_training_prior"]

# What evaluate_checkpoint writes into its output folder (plus, for relation models,
# Scene-Graph-Benchmark's custom_prediction.json and custom_data_info.json).
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"
PREDICATE_RECALL_FILE = "predicate_recall.json"
# The metric families of scene-graph recall, in the order they are printed.
RECALL_FAMILIES = ("R", "ngR", "mR", "ng-mR", "zR", "ng-zR")
# What each data.task scores (docs/design.md §2 "Tasks"); printed with the relation metrics.
_TASK_TEXT = {"sgdet": "objects and relations detected",
              "sgcls": "boxes given; classes and relations predicted",
              "predcls": "boxes and classes given; relations predicted"}


def coco_results(predictions: Sequence[Prediction], dataset: Dataset,
                 missing_keypoints: str = "centroid") -> list[dict[str, Any]]:
    """COCO results of the predictions: keypoints for pose (absent parts placed as
    ``missing_keypoints`` says, see :func:`aehg.evaluation.coco.keypoints_to_results`), boxes for
    objects."""
    base = base_dataset(dataset)
    out: list[dict[str, Any]] = []
    for p in predictions:
        if p.image_id is None:
            raise ValueError("predictions: every prediction needs an image_id for COCO results")
        if isinstance(base, CocoKeypointDataset):
            out += keypoints_to_results(p.keypoints, p.scores, p.image_id, base.category_id,
                                        missing=missing_keypoints)
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


def _data_path(cfg: Config, p: str) -> Path:
    """A path of ``cfg.data``: absolute as given, else relative to ``data.root``."""
    path = Path(p)
    return path if path.is_absolute() else Path(cfg.data.root) / path


def _file_key(path: Path) -> tuple[str, int, int]:
    """Path, modification time and size: a cache key that changes when the file does."""
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _cached_triplet_file(key: tuple[str, int, int], cat_ids: tuple, predicate_ids: tuple
                         ) -> np.ndarray:
    return load_train_triplets(key[0], cat_ids, predicate_ids)


@functools.lru_cache(maxsize=8)
def _cached_json_triplets(key: tuple[str, int, int], cat_ids: tuple, predicate_ids: tuple,
                          val_json: str) -> np.ndarray:
    """Distinct (subject class, predicate, object class) of a relation-format training file."""
    path = Path(key[0])
    data = load_coco_json(path, relations=True)
    # As RelationDataset: a relationship naming a crowd annotation is not a training link.
    category = {a["id"]: a["category_id"] for a in data["annotations"]
                if not a.get("iscrowd", 0)}
    found = {(category[r["subject_id"]], r["predicate_id"], category[r["object_id"]])
             for r in data["relationships"]
             if r["subject_id"] in category and r["object_id"] in category}
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    pred_index = {c: k for k, c in enumerate(predicate_ids)}
    rows = []
    for s, p, o in sorted(found, key=repr):
        for value, index, what in ((s, cat_index, "category"), (p, pred_index, "predicate"),
                                   (o, cat_index, "category")):
            if value not in index:
                raise DataFormatError(f"{path}: training triplet ({s!r}, {p!r}, {o!r}): "
                                      f"{what} id {value!r} is not a {what} of {val_json}")
        rows.append((cat_index[s], pred_index[p], cat_index[o]))
    return np.asarray(sorted(rows), dtype=np.int64).reshape(-1, 3)


def train_triplets(cfg: Config, dataset: Dataset) -> tuple[np.ndarray, str] | None:
    """The training triplets that decide which ground-truth triplets are zero-shot (zR@K).

    In order (docs/design.md §6):

    1. ``data.train_triplets``, a triplet file (:func:`aehg.data.sgb.write_train_triplets`)
       relative to ``data.root``;
    2. ``train_triplets.json`` beside the validation JSON (what ``tools/convert_sgb.py``
       writes: SGB's training triplets, duplicates included);
    3. the triplets of the training JSON (``data.train_json``, or the synthetic training file),
       read once per process (cached by path, time and size) and never written into the data
       folder, which may be shared or read-only;
    4. None when there is no training JSON either: zR@K and ng-zR@K are not computed.

    Returns:
        ``(triplets (T, 3) int64 as class indices of ``dataset``, where they came from)``, or
        None.

    Raises:
        FileNotFoundError: ``data.train_triplets`` names a missing file.
        DataFormatError: a triplet file or training JSON that is broken or names a category or
            predicate id the validation data do not have (naming the file and the id).
    """
    base = base_dataset(dataset)
    if not isinstance(base, RelationDataset):
        raise TypeError(f"dataset: expected a RelationDataset, got {type(base).__name__}")
    ids = (tuple(base.cat_ids), tuple(base.predicate_ids))
    d = cfg.data
    if d.train_triplets is not None:
        path = _data_path(cfg, d.train_triplets)
        if not path.is_file():
            raise FileNotFoundError(f"data.train_triplets: training triplet file not found: "
                                    f"{path}")
        return _cached_triplet_file(_file_key(path), *ids).copy(), str(path)
    beside = Path(base.json_path).parent / TRAIN_TRIPLETS_FILE
    if beside.is_file():
        return _cached_triplet_file(_file_key(beside), *ids).copy(), str(beside)
    if d.source == "synthetic":
        # The call build_dataset makes, a no-op once the data are there; only for a validation
        # set from this root, so that scoring never generates data anywhere else.
        if not Path(base.json_path).resolve().is_relative_to(Path(d.root).resolve()):
            return None
        train_json = ensure_synthetic(d.synthetic, d.root).json("train")
    else:
        train_json = _data_path(cfg, d.train_json)
    if not train_json.is_file():
        return None
    triplets = _cached_json_triplets(_file_key(train_json), *ids, str(base.json_path))
    return triplets.copy(), str(train_json)


def format_relation_metrics(metrics: dict[str, float]) -> str:
    """The scene-graph metrics as a text table: one line per family (``R``, ``ngR``, ``mR``,
    ``ng-mR``, ``zR``, ``ng-zR``) with a named cell per K, then every other metric on its own
    line."""
    fams = [f for f in RECALL_FAMILIES if any(k.startswith(f"{f}@") for k in metrics)]
    recall = [k for k in metrics if k.split("@")[0] in fams]
    width = max([len(k) for k in metrics] + [1])
    lines = ["   ".join(f"{k:<{width}} {metrics[k]:7.4f}" for k in recall
                        if k.split("@")[0] == f) for f in fams]
    lines += [f"{k:<{width}} {v:7.4f}" for k, v in metrics.items() if k not in recall]
    return "\n".join(lines) + "\n"


def _scene_graph_inputs(predictions: Sequence[Prediction], base: RelationDataset, cfg: Config
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Ground truth and predictions of the predicted images, as scene_graph.evaluate wants."""
    gts = [{"boxes": base.boxes(p.image_id), "labels": base.labels(p.image_id),
            "relations": base.links(p.image_id)} for p in predictions]
    return gts, [p.scene_graph(cfg.eval.triplet_score) for p in predictions]


def predicate_recall(predictions: Sequence[Prediction], dataset: Dataset, cfg: Config
                     ) -> list[dict[str, Any]]:
    """Per-predicate recall of relation predictions, one row per predicate of the dataset's
    vocabulary (:func:`aehg.evaluation.scene_graph.per_predicate_recall`: the terms that
    ``mR@K`` and ``ng-mR@K`` average)."""
    base = base_dataset(dataset)
    if not isinstance(base, RelationDataset):
        raise TypeError(f"dataset: expected a RelationDataset, got {type(base).__name__}")
    gts, sg = _scene_graph_inputs(predictions, base, cfg)
    return per_predicate_recall(gts, sg, ks=cfg.eval.recall_ks,
                                num_predicates=base.num_predicates,
                                predicate_names=base.predicate_names)


def score_predictions(predictions: Sequence[Prediction], dataset: Dataset, cfg: Config, *,
                      verbose: bool = False) -> dict[str, float]:
    """Score predictions against a dataset's annotations.

    Pose: COCO keypoint ``AP, AP50, AP75, APm, APl, AR, …`` over the predicted images (OKS
    sigmas of the dataset). Relations: ``R@K``, ``ngR@K``, ``mR@K``, ``ng-mR@K`` and, when
    :func:`train_triplets` finds training triplets, ``zR@K``, ``ng-zR@K`` for
    ``cfg.eval.recall_ks`` (docs/design.md §6; mR over all the dataset's predicates, triplets
    ranked by ``cfg.eval.triplet_score``), ``object_recall`` (ground-truth objects matched by a
    same-class prediction with IoU ≥ 0.5) and, when the model regresses boxes, COCO box
    ``object_AP`` / ``object_AP50``. Only the predicted images count: an image without a
    prediction (skipped as unreadable) is neither in the COCO image ids nor in the recall.

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
    if isinstance(base, MpiiDataset):  # single-person pose: PCKh (docs/design.md §6)
        return score_single_pose(predictions, base, verbose=verbose)
    if isinstance(base, CocoKeypointDataset):
        _check_eval_fields(base, image_ids)
        results = coco_results(predictions, base, cfg.eval.missing_keypoints)
        return coco_evaluate(base.coco, results, iou_type="keypoints",
                             sigmas=base.oks_sigmas, image_ids=image_ids, verbose=verbose)
    if not isinstance(base, RelationDataset):
        raise TypeError(f"dataset: expected a CocoKeypointDataset or RelationDataset, got "
                        f"{type(base).__name__}")
    gts, sg = _scene_graph_inputs(predictions, base, cfg)
    zero_shot = train_triplets(cfg, base)
    # num_predicates: mR@K / ng-mR@K average over the whole vocabulary, as SGB's do.
    out = scene_graph_evaluate(gts, sg, ks=cfg.eval.recall_ks,
                               num_predicates=base.num_predicates,
                               train_triplets=None if zero_shot is None else zero_shot[0])
    out["object_recall"] = object_recall(gts, sg)
    if predictions[0].boxes is not None:
        _check_eval_fields(base, image_ids)
        stats = coco_evaluate(base.coco, coco_results(predictions, base), iou_type="bbox",
                              image_ids=image_ids, verbose=verbose)
        out["object_AP"] = stats["AP"]
        out["object_AP50"] = stats["AP50"]
    if verbose:
        if zero_shot is None:
            print("zR@K, ng-zR@K: not computed (no training triplets: set data.train_triplets "
                  "or give the training JSON)")
        else:
            print(f"zero-shot triplets: those not among the {len(zero_shot[0])} training "
                  f"triplets of {zero_shot[1]}")
        print(f"task: {cfg.data.task} ({_TASK_TEXT[cfg.data.task]})")
        print(f"ranked by eval.triplet_score: {cfg.eval.triplet_score}; mR@K over the "
              f"{base.num_predicates} predicates")
        print(format_relation_metrics(out), end="")
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
        ``R@K, ngR@K, mR@K, ng-mR@K`` (and ``zR@K, ng-zR@K`` with training triplets) per K,
        ``object_recall`` and, with boxes, ``object_AP``,
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


def with_training_prior(cfg: Config, checkpoint: Mapping[str, Any]) -> Config:
    """``cfg`` ready to group with the training prior when it asks for one
    (``eval.pose_prior: train``, docs/design.md §4): the fit stored in the checkpoint's config
    (:func:`aehg.inference.predictor.with_checkpoint_prior`), else, for a checkpoint trained
    without one, the prior fitted on ``cfg``'s training split. ``cfg`` is not modified."""
    cfg = with_checkpoint_prior(cfg, checkpoint)
    if cfg.data.kind == "pose" and cfg.eval.pose_prior == "train" and \
            cfg.eval.fitted_prior is None:
        cfg = copy.deepcopy(cfg)
        cfg.eval.fitted_prior = fit_pose_prior(build_dataset(cfg, "train"))
    return cfg


def evaluate_checkpoint(cfg: Config, checkpoint: str | os.PathLike[str],
                        output_dir: str | os.PathLike[str] | None = None, *,
                        device: str | torch.device | None = None, verbose: bool = True,
                        progress: bool = True) -> dict[str, float]:
    """Evaluate a checkpoint on the validation split of ``cfg`` and write the results.

    Writes into ``output_dir`` (default: ``eval/`` beside the checkpoint) ``results.json``
    (COCO keypoint results for pose; the relation-results JSON of docs/design.md §5 for
    relations) and ``metrics.json``; for relations also ``predicate_recall.json`` (the
    per-predicate list of :func:`predicate_recall`) and Scene-Graph-Benchmark's
    ``custom_prediction.json`` / ``custom_data_info.json`` (:func:`aehg.export.
    write_sgb_custom_prediction`; image index i is the i-th predicted image, ``idx_to_files``
    its path). Prints the metric table (and for relations the per-predicate table) when
    ``verbose``.

    ``metrics.json`` includes ``skipped_images``: validation images left out as unreadable
    (``data.skip_unreadable``), also printed when there are any; for relations also ``task``
    (``data.task``: sgdet, sgcls or predcls, docs/design.md §2 "Tasks"; sgcls / predcls read
    the objects at the ground-truth boxes).

    Raises:
        FileNotFoundError: missing checkpoint or data.
        ValueError: unreadable checkpoint, or one of another architecture (names the keys);
            ``DataFormatError`` for broken annotations or an empty evaluation set.
    """
    ckpt = load_checkpoint(checkpoint)
    cfg = with_training_prior(cfg, ckpt)
    model = build_model(cfg.model)
    check_checkpoint_input(cfg, ckpt, f"checkpoint {checkpoint}")
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
    written = []
    if cfg.data.kind == "pose":
        written.append(write_json(out_dir / RESULTS_FILE, coco_results(preds, dataset,
                                                                    cfg.eval.missing_keypoints)))
    elif cfg.data.kind == "single_pose":  # one row per person: keypoints in picture pixels
        written.append(write_json(out_dir / RESULTS_FILE,
                                  single_pose_results(preds, dataset.annotations)))
    else:
        info = data_info(cfg, dataset)
        graphs = [p.graph for p in preds]
        written.append(write_json(out_dir / RESULTS_FILE, graphs_to_relation_results(
            graphs, info.categories, info.predicate_categories)))
        rows = predicate_recall(preds, dataset, cfg)
        if verbose:
            print(predicate_recall_table(rows), end="")
        written.append(write_json(out_dir / PREDICATE_RECALL_FILE, rows, indent=1))
        # Scene-Graph-Benchmark's pair, image index i = preds[i] (docs/design.md §5).
        written += write_sgb_custom_prediction(
            graphs, dataset.class_names, dataset.predicate_names, out_dir,
            [Path(dataset.image_dir) / str(p.file_name) for p in preds],
            triplet_score=cfg.eval.triplet_score,
            link_class_heat=[p.link_class_heat for p in preds])
    # Relations name their task (sgdet / sgcls / predcls) beside the figures.
    named = {**metrics, "task": cfg.data.task} if cfg.data.kind == "relations" else metrics
    written.append(write_json(out_dir / METRICS_FILE, named, indent=2))
    if verbose:
        print(f"wrote {', '.join(p.name for p in written)} to {out_dir}")
    return metrics
