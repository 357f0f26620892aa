"""Decoding a batch of maps into per-picture :class:`Prediction` s in original-image pixels
(docs/design.md §8).

People are grouped with :func:`aehg.group`, objects found with :func:`aehg.decode_objects`,
both mapped back through the inverse of each sample's ``meta["transform"]`` and linked with
:func:`aehg.build_graph`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch

from aehg.config import TASKS, EvalConfig, FittedPrior
from aehg.data.coco import CocoKeypointDataset
from aehg.data.info import base_dataset
from aehg.data.transforms import apply_affine, invert_affine, transform_boxes
from aehg.decoding import Instances, build_graph, decode_objects, decode_single, group
from aehg.decoding.objects import read_objects
from aehg.decoding.pose_nms import oks_nms
from aehg.decoding.prior import PosePrior
from aehg.export import triplet_scores
from aehg.models import StackOutput

__all__ = ["Prediction", "decode_predictions", "fit_pose_prior", "resolve_pose_prior"]


@dataclass
class Prediction:
    """What the model found in one picture, in original-image pixels.

    Attributes:
        instances: people (``keypoints`` (N, C, 3) x, y, score; ``scores``) or objects
            (plus ``labels`` and ``boxes`` x1, y1, x2, y2), sorted by decreasing score.
        graph: nodes = the instances (index i = ``instances[i]``; attributes of
            :func:`aehg.build_graph`: ``label``, ``score``, ``x``, ``y``, ``tag``, ``box`` or
            ``keypoints``), edges = links (``label`` = link class, ``score``, link pixel ``x``,
            ``y``); graph attributes ``height``, ``width`` and, when known, ``image_id`` and
            ``file_name``. A pose model without links gives a graph without edges.
        image_id: the dataset's image id, or None.
        file_name: the picture's file name, or None.
        orig_size: (h, w) of the picture.
        link_class_heat: per edge ``(u, v, key)`` the R link heatmap values of all predicates
            at the edge's link pixel (the ``rel_all_scores`` of Scene-Graph-Benchmark's
            output, docs/design.md §5); None without a link head. Kept beside the graph, not
            as an edge attribute, so that graph files do not grow by R numbers per edge.
    """

    instances: Instances
    graph: nx.MultiDiGraph
    orig_size: tuple[int, int]
    image_id: int | None = None
    file_name: str | None = None
    link_class_heat: dict[tuple[int, int, int], np.ndarray] | None = None

    @property
    def keypoints(self) -> np.ndarray:
        """(N, C, 3) x, y, score in image pixels (score 0 = absent part)."""
        return self.instances.keypoints

    @property
    def scores(self) -> np.ndarray:
        """(N,) instance scores."""
        return self.instances.scores

    @property
    def labels(self) -> np.ndarray | None:
        """(N,) object classes (None for people)."""
        return self.instances.labels

    @property
    def boxes(self) -> np.ndarray | None:
        """(N, 4) object boxes x1, y1, x2, y2 in image pixels (None without box sizes)."""
        return self.instances.boxes

    def scene_graph(self, triplet_score: str = "aehg") -> dict[str, np.ndarray]:
        """The prediction as :func:`aehg.evaluation.scene_graph.evaluate` wants it.

        ``relation_scores``, the ranking of the triplets, follow ``triplet_score``
        (``eval.triplet_score``, :func:`aehg.export.triplet_scores`): ``"aehg"`` is the edge
        ``score`` = heat · sqrt(max(subject score, 0) · max(object score, 0)); ``"sgb"`` is
        heat · max(subject score, 0) · max(object score, 0), Scene-Graph-Benchmark's relation ×
        subject × object score. Objects without a regressed box get a one-pixel box at their
        centre.

        Raises:
            ValueError: unknown ``triplet_score``, or an edge or node without the score it needs.

        Shapes:
            -> boxes (N, 4), labels (N,), relations (Q, 3) subject, object, predicate,
            relation_scores (Q,)
        """
        inst = self.instances
        n = len(inst)
        labels = inst.labels if inst.labels is not None else np.zeros(n, np.int64)
        if inst.boxes is not None:
            boxes = inst.boxes.astype(np.float64)
        else:
            xy = inst.keypoints[np.arange(n), labels, :2].astype(np.float64)
            boxes = np.concatenate([xy, xy], axis=1)
        edges = list(self.graph.edges(data=True))
        rels = np.array([[u, v, d["label"]] for u, v, d in edges], dtype=np.int64).reshape(-1, 3)
        scores = triplet_scores(self.graph, triplet_score)  # in graph.edges order, as rels
        return {"boxes": boxes, "labels": labels, "relations": rels, "relation_scores": scores}


def _link_class_heat(graph: nx.MultiDiGraph, heat: np.ndarray
                     ) -> dict[tuple[int, int, int], np.ndarray]:
    """Per edge, the link heatmaps of all R classes at its link pixel (still heatmap pixels).

    Shapes:
        heat: (R, H, W) -> values (R,) float32
    """
    edges = list(graph.edges(keys=True, data=True))
    if not edges:
        return {}
    xs = np.array([int(d["x"]) for *_, d in edges])
    ys = np.array([int(d["y"]) for *_, d in edges])
    values = heat[:, ys, xs].T.astype(np.float32)  # (E, R), one gather for the image
    return {(u, v, k): values[i] for i, (u, v, k, _) in enumerate(edges)}


def _known_objects(obj: Any, i: int, meta: Mapping[str, Any], task: str) -> Instances:
    """The known objects of image ``i`` (``meta["known_boxes"]``, original pixels) read off
    its maps, in map pixels; boxes are clipped to the map first, as the targets' are."""
    if meta.get("known_boxes") is None:
        raise ValueError(f"metas[{i}]: data.task {task!r} decodes the relations of known "
                         f"objects: expected 'known_boxes' (N, 4) in original pixels")
    labels = meta.get("known_labels") if task == "predcls" else None
    if task == "predcls" and labels is None:
        raise ValueError(f"metas[{i}]: data.task 'predcls': expected 'known_labels' (N,)")
    h, w = obj.heatmaps.shape[-2:]
    boxes = transform_boxes(np.asarray(meta["known_boxes"], np.float64), meta["transform"])
    boxes = np.concatenate([np.clip(boxes[:, :2], -0.5, [w - 0.5, h - 0.5]),
                            np.clip(boxes[:, 2:], -0.5, [w - 0.5, h - 0.5])], axis=1)
    return read_objects(obj.heatmaps[i], obj.tags[i], boxes, labels=labels, slots=obj.slots)


def _graph_to_image(graph: nx.MultiDiGraph, back: np.ndarray) -> None:
    """Map the edges' link pixels (heatmap pixels) to image pixels, in place."""
    for *_, d in graph.edges(data=True):  # a few dozen edges per picture
        x, y = apply_affine(np.array([d["x"], d["y"]]), back)
        d["x"], d["y"] = float(x), float(y)


@functools.lru_cache(maxsize=8)
def _prior_file(name: str) -> PosePrior | str:
    """A built-in name as it is, else a PosePrior file (read once)."""
    return name if name in ("auto", "coco", "flat") else PosePrior.load(name)


@functools.lru_cache(maxsize=8)
def _fitted(mean: tuple[tuple[float, ...], ...], std: tuple[tuple[float, ...], ...]
            ) -> PosePrior:
    return PosePrior(np.asarray(mean), np.asarray(std))


def resolve_pose_prior(eval_cfg: EvalConfig) -> PosePrior | str:
    """The grouping prior ``eval.pose_prior`` names: a built-in name as it is, the prior in
    ``eval.fitted_prior`` for ``"train"``, else a PosePrior file (read once).

    Raises:
        ValueError: ``"train"`` without ``eval.fitted_prior`` (names what to do), or a prior
            file that cannot be read.
    """
    if eval_cfg.pose_prior != "train":
        return _prior_file(eval_cfg.pose_prior)
    fp = eval_cfg.fitted_prior
    if fp is None:
        raise ValueError("eval.pose_prior: 'train' groups with the prior fitted on the "
                         "training annotations, which training stores in eval.fitted_prior, "
                         "but this config has none: use the config of the training run (or "
                         "its checkpoint's), or set eval.pose_prior to 'auto', 'flat' or a "
                         "PosePrior file")
    return _fitted(tuple(map(tuple, fp.mean)), tuple(map(tuple, fp.std)))


def fit_pose_prior(dataset: Any) -> FittedPrior:
    """The :class:`PosePrior` of a keypoint dataset's annotations (``PosePrior.from_coco`` on
    its COCO JSON), as the config stores it in ``eval.fitted_prior``.

    Raises:
        ValueError: the dataset is not a COCO-style keypoint dataset, or has no person with
            keypoints (names the annotation file).
    """
    base = base_dataset(dataset)
    if not isinstance(base, CocoKeypointDataset):
        raise ValueError(f"eval.pose_prior: 'train' fits the prior on COCO-style keypoint "
                         f"annotations, got a {type(base).__name__}")
    prior = PosePrior.from_coco(base.coco.dataset)
    return FittedPrior(mean=np.round(prior.mean, 6).tolist(), std=np.round(prior.std, 6).tolist())


def decode_predictions(maps: StackOutput, metas: Sequence[Mapping[str, Any]],
                       eval_cfg: EvalConfig, kind: str = "pose",
                       class_names: Sequence[str] | None = None,
                       predicate_names: Sequence[str] | None = None,
                       task: str = "sgdet") -> list[Prediction]:
    """Decode a batch of maps into per-image predictions in original-image pixels.

    People (``kind="pose"``) are grouped with :func:`aehg.group` (``nms_kernel``, ``top_k``,
    ``detection_threshold``, ``tag_threshold``, ``max_instances``, ``adjust``, ``refine`` of
    ``eval_cfg``); objects (``kind="relations"``) with :func:`aehg.decode_objects`
    (``object_nms_kernel``, ``object_top_k``, ``detection_threshold``). Instances are mapped
    back through the inverse of each ``meta["transform"]``, then linked with
    :func:`aehg.build_graph` (``object_nms_kernel``, ``object_top_k``, ``link_threshold``,
    ``max_distance``, ``graph_constraint``) when the maps have links; each prediction then
    keeps, per edge, the link heatmaps of all R predicates at the edge's link pixel
    (``Prediction.link_class_heat``).

    Args:
        maps: the batch's maps (e.g. from :func:`infer_maps` or a model's last stack).
        metas: per image at least ``transform`` (original → map pixels) and ``orig_size``;
            ``image_id`` and ``file_name`` are copied when present.
        eval_cfg: decoding parameters.
        kind: "pose", "relations" or "single_pose" (:func:`aehg.decoding.decode_single`,
            ``adjust``; one person per image).
        class_names, predicate_names: stored as node/edge ``name`` when given.
        task: ``data.task`` of a relation model. ``sgcls`` / ``predcls`` decode no objects:
            every meta gives ``known_boxes`` (N, 4) in original pixels (and, for predcls,
            ``known_labels`` (N,)), the objects are those boxes in that order, read off the
            maps with :func:`aehg.decoding.objects.read_objects` (class at the centre for
            sgcls, given for predcls), and only the relations are decoded between them
            (docs/design.md §2 "Tasks").

    Maps with slots (``maps.objects.slots``, ``maps.interactions.slots`` > 1) are decoded
    slot by slot (docs/design.md "Slots"); ``link_class_heat`` is then the best slot's heat of
    each predicate.

    Shapes:
        maps.objects.heatmaps: (B, S·C, H, W); len(metas) == B
    """
    if kind not in ("pose", "relations", "single_pose"):
        raise ValueError(f"kind: expected 'pose', 'relations' or 'single_pose', got {kind!r}")
    if task not in TASKS or (task != "sgdet" and kind != "relations"):
        raise ValueError(f"task: expected one of {list(TASKS)} ('sgdet' unless kind is "
                         f"'relations'), got {task!r} with kind {kind!r}")
    obj = maps.objects
    b = obj.heatmaps.shape[0]
    if len(metas) != b:
        raise ValueError(f"metas: expected {b} entries (one per image of the maps), "
                         f"got {len(metas)}")
    if kind == "pose":
        insts = group(obj.heatmaps, obj.tags, nms_kernel=eval_cfg.nms_kernel,
                      top_k=eval_cfg.top_k, detection_threshold=eval_cfg.detection_threshold,
                      tag_threshold=eval_cfg.tag_threshold, max_instances=eval_cfg.max_instances,
                      adjust=eval_cfg.adjust, refine=eval_cfg.refine,
                      part_order=eval_cfg.part_order, method=eval_cfg.group_method,
                      pose_prior=resolve_pose_prior(eval_cfg),
                      spatial_weight=eval_cfg.spatial_weight,
                      confidence_weight=eval_cfg.confidence_weight,
                      strong_ratio=eval_cfg.strong_ratio,
                      hold_duplicates=eval_cfg.hold_duplicates,
                      merge_ratio=eval_cfg.merge_ratio,
                      subpixel_method=eval_cfg.subpixel)
    elif kind == "single_pose":
        # One given person per image: every joint at its maximum (docs/design.md §4).
        insts = decode_single(obj.heatmaps, adjust=eval_cfg.adjust,
                              subpixel_method=eval_cfg.subpixel)
    elif task != "sgdet":
        insts = [_known_objects(obj, i, m, task) for i, m in enumerate(metas)]
    else:
        insts = decode_objects(obj.heatmaps, obj.tags, obj.sizes,
                               nms_kernel=eval_cfg.object_nms_kernel,
                               top_k=eval_cfg.object_top_k,
                               detection_threshold=eval_cfg.detection_threshold,
                               slots=obj.slots)
    insts = [inst.to_image(m["transform"]) for inst, m in zip(insts, metas, strict=True)]
    if task != "sgdet":  # the given boxes exactly, not their round trip through the affine
        for inst, m in zip(insts, metas, strict=True):
            inst.boxes = np.asarray(m["known_boxes"], np.float32).reshape(-1, 4)
    if kind == "pose" and eval_cfg.pose_nms == "oks":
        insts = [oks_nms(inst, eval_cfg.pose_nms_threshold) for inst in insts]
    if maps.interactions is not None:
        inter = maps.interactions
        graphs = build_graph(insts, inter.heatmaps, inter.src, inter.dst,
                             nms_kernel=eval_cfg.object_nms_kernel, top_k=eval_cfg.object_top_k,
                             link_threshold=eval_cfg.link_threshold,
                             max_distance=eval_cfg.max_distance,
                             graph_constraint=eval_cfg.graph_constraint,
                             class_names=class_names, link_names=predicate_names,
                             slots=inter.slots)
        link_heat = inter.heatmaps
        if isinstance(link_heat, torch.Tensor):
            link_heat = link_heat.detach().float().cpu().numpy()
        if inter.slots > 1:  # per predicate, its best slot (docs/design.md "Slots")
            link_heat = np.asarray(link_heat).reshape(b, inter.slots, -1,
                                                      *link_heat.shape[-2:]).max(axis=1)
        # Read before the edge pixels are mapped to image pixels below.
        class_heat: list[dict | None] = [_link_class_heat(g, np.asarray(link_heat[i]))
                                         for i, g in enumerate(graphs)]
        for g, m in zip(graphs, metas, strict=True):
            _graph_to_image(g, invert_affine(m["transform"]))
    else:
        # No link head: the same node attributes, no edge (zero link maps give no peak).
        e = obj.tags.shape[2]
        h, w = obj.heatmaps.shape[-2:]
        nodes = insts
        if e == 0:  # no tags (single_pose): build_graph needs E >= 1, the nodes get tag [0]
            e = 1
            nodes = [Instances(i.keypoints, i.scores, np.zeros((len(i), 1), np.float32))
                     for i in insts]
        zeros = np.zeros((b, e, h, w), np.float32)
        graphs = build_graph(nodes, np.zeros((b, 1, h, w), np.float32), zeros, zeros,
                             class_names=class_names if kind == "relations" else None)
        class_heat = [None] * b
    out = []
    for inst, g, m, heats in zip(insts, graphs, metas, class_heat, strict=True):
        h, w = (int(v) for v in m["orig_size"])
        g.graph.update(height=h, width=w)
        image_id = m.get("image_id")
        file_name = m.get("file_name")
        if image_id is not None:
            g.graph["image_id"] = int(image_id)
        if file_name is not None:
            g.graph["file_name"] = str(file_name)
        out.append(Prediction(inst, g, (h, w), None if image_id is None else int(image_id),
                              None if file_name is None else str(file_name), heats))
    return out
