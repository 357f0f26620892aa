"""Decoding a batch of maps into per-picture :class:`Prediction` s in original-image pixels
(docs/design.md §8).

People are grouped with :func:`aehg.group`, objects found with :func:`aehg.decode_objects`,
both mapped back through the inverse of each sample's ``meta["transform"]`` and linked with
:func:`aehg.build_graph`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from aehg.config import EvalConfig
from aehg.data.transforms import apply_affine, invert_affine
from aehg.decoding import Instances, build_graph, decode_objects, group
from aehg.models import StackOutput

__all__ = ["Prediction", "decode_predictions"]


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
    """

    instances: Instances
    graph: nx.MultiDiGraph
    orig_size: tuple[int, int]
    image_id: int | None = None
    file_name: str | None = None

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

    def scene_graph(self) -> dict[str, np.ndarray]:
        """The prediction as :func:`aehg.evaluation.scene_graph.evaluate` wants it.

        Objects without a regressed box get a one-pixel box at their centre.
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
        scores = np.array([d["score"] for _, _, d in edges], dtype=np.float64)
        return {"boxes": boxes, "labels": labels, "relations": rels, "relation_scores": scores}


def _graph_to_image(graph: nx.MultiDiGraph, back: np.ndarray) -> None:
    """Map the edges' link pixels (heatmap pixels) to image pixels, in place."""
    for *_, d in graph.edges(data=True):  # a few dozen edges per picture
        x, y = apply_affine(np.array([d["x"], d["y"]]), back)
        d["x"], d["y"] = float(x), float(y)


def decode_predictions(maps: StackOutput, metas: Sequence[Mapping[str, Any]],
                       eval_cfg: EvalConfig, kind: str = "pose",
                       class_names: Sequence[str] | None = None,
                       predicate_names: Sequence[str] | None = None) -> list[Prediction]:
    """Decode a batch of maps into per-image predictions in original-image pixels.

    People (``kind="pose"``) are grouped with :func:`aehg.group` (``nms_kernel``, ``top_k``,
    ``detection_threshold``, ``tag_threshold``, ``max_instances``, ``adjust``, ``refine`` of
    ``eval_cfg``); objects (``kind="relations"``) with :func:`aehg.decode_objects`
    (``object_nms_kernel``, ``object_top_k``, ``detection_threshold``). Instances are mapped
    back through the inverse of each ``meta["transform"]``, then linked with
    :func:`aehg.build_graph` (``object_nms_kernel``, ``object_top_k``, ``link_threshold``,
    ``max_distance``, ``graph_constraint``) when the maps have links.

    Args:
        maps: the batch's maps (e.g. from :func:`infer_maps` or a model's last stack).
        metas: per image at least ``transform`` (original → map pixels) and ``orig_size``;
            ``image_id`` and ``file_name`` are copied when present.
        eval_cfg: decoding parameters.
        kind: "pose" or "relations".
        class_names, predicate_names: stored as node/edge ``name`` when given.

    Shapes:
        maps.objects.heatmaps: (B, C, H, W); len(metas) == B
    """
    if kind not in ("pose", "relations"):
        raise ValueError(f"kind: expected 'pose' or 'relations', got {kind!r}")
    obj = maps.objects
    b = obj.heatmaps.shape[0]
    if len(metas) != b:
        raise ValueError(f"metas: expected {b} entries (one per image of the maps), "
                         f"got {len(metas)}")
    if kind == "pose":
        insts = group(obj.heatmaps, obj.tags, nms_kernel=eval_cfg.nms_kernel,
                      top_k=eval_cfg.top_k, detection_threshold=eval_cfg.detection_threshold,
                      tag_threshold=eval_cfg.tag_threshold, max_instances=eval_cfg.max_instances,
                      adjust=eval_cfg.adjust, refine=eval_cfg.refine)
    else:
        insts = decode_objects(obj.heatmaps, obj.tags, obj.sizes,
                               nms_kernel=eval_cfg.object_nms_kernel,
                               top_k=eval_cfg.object_top_k,
                               detection_threshold=eval_cfg.detection_threshold)
    insts = [inst.to_image(m["transform"]) for inst, m in zip(insts, metas, strict=True)]
    if maps.interactions is not None:
        inter = maps.interactions
        graphs = build_graph(insts, inter.heatmaps, inter.src, inter.dst,
                             nms_kernel=eval_cfg.object_nms_kernel, top_k=eval_cfg.object_top_k,
                             link_threshold=eval_cfg.link_threshold,
                             max_distance=eval_cfg.max_distance,
                             graph_constraint=eval_cfg.graph_constraint,
                             class_names=class_names, link_names=predicate_names)
        for g, m in zip(graphs, metas, strict=True):
            _graph_to_image(g, invert_affine(m["transform"]))
    else:
        # No link head: the same node attributes, no edge (zero link maps give no peak).
        e = obj.tags.shape[2]
        h, w = obj.heatmaps.shape[-2:]
        zeros = np.zeros((b, e, h, w), np.float32)
        graphs = build_graph(insts, np.zeros((b, 1, h, w), np.float32), zeros, zeros,
                             class_names=class_names if kind == "relations" else None)
    out = []
    for inst, g, m in zip(insts, graphs, metas, strict=True):
        h, w = (int(v) for v in m["orig_size"])
        g.graph.update(height=h, width=w)
        image_id = m.get("image_id")
        file_name = m.get("file_name")
        if image_id is not None:
            g.graph["image_id"] = int(image_id)
        if file_name is not None:
            g.graph["file_name"] = str(file_name)
        out.append(Prediction(inst, g, (h, w), None if image_id is None else int(image_id),
                              None if file_name is None else str(file_name)))
    return out
