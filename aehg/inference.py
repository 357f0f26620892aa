"""Inference and model evaluation: test-time maps, decoding to image pixels, Predictor.

Pipeline: pictures → validation transform (:func:`preprocess`) → model (optional flip test,
multi-scale, early exit; :func:`infer_maps`) → decoding (:func:`aehg.group` for people,
:func:`aehg.decode_objects` for objects, :func:`aehg.build_graph` for links) → instances mapped
back to original-image pixels through the inverse of ``meta["transform"]``
(:func:`decode_predictions`) → :class:`Prediction` per image (people / objects and a
``networkx.MultiDiGraph``).

:func:`evaluate_model` runs this over a validation dataset or loader and scores it: COCO
keypoint AP for pose, scene-graph R@K / ngR@K / mR@K plus object recall and box AP for
relations. The training engine calls it for periodic validation.

Example:
    >>> predictor = Predictor(None, "outputs/run/best.pt", flip=True)   # config from checkpoint
    >>> pred = predictor.predict("photo.jpg")
    >>> pred.keypoints.shape, pred.scores.shape, pred.graph.number_of_edges()
    >>> metrics = evaluate_model(model, val_loader, cfg)                  # {"AP": …} or {"R@50": …}
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from aehg.config import Config, EvalConfig, config_from_dict
from aehg.data.coco import CocoBase, CocoKeypointDataset, derive_flip_map
from aehg.data.loader import collate
from aehg.data.relations import RelationDataset
from aehg.data.transforms import (
    affine_matrix,
    apply_affine,
    compose,
    input_to_output,
    invert_affine,
    normalize_image,
    warp_image,
)
from aehg.engine.checkpoint import load_checkpoint, load_model_weights, unwrap_model
from aehg.evaluation.coco import boxes_to_results, keypoints_to_results
from aehg.evaluation.coco import evaluate as coco_evaluate
from aehg.evaluation.scene_graph import evaluate as scene_graph_evaluate
from aehg.evaluation.scene_graph import object_recall
from aehg.graphs import build_graph
from aehg.grouping import Instances, decode_objects, group
from aehg.models import InteractionMaps, ObjectMaps, StackOutput, build_model

__all__ = [
    "DataInfo",
    "ImageReadError",
    "Prediction",
    "Predictor",
    "coco_results",
    "config_from_checkpoint",
    "data_info",
    "decode_predictions",
    "evaluate_checkpoint",
    "evaluate_model",
    "flip_back",
    "infer_maps",
    "input_size_for_scale",
    "list_images",
    "merge_flip",
    "predict_dataset",
    "preprocess",
    "read_image",
    "resolve_flip_map",
    "run_inference",
    "score_predictions",
]

log = logging.getLogger(__name__)

# COCO's left/right swap for 17 parts (part c of a flipped image is part FLIP[c]).
_COCO_FLIP_MAP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


class ImageReadError(OSError):
    """An input picture is missing or cannot be decoded; the message names the file."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a picture as BGR uint8 ``(H, W, 3)``; raise :class:`ImageReadError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"cannot decode image file {path} (not a picture OpenCV reads)")
    return image


def resolve_flip_map(flip_map: Sequence[int] | None, num_classes: int, kind: str = "pose"
                     ) -> np.ndarray:
    """The channel permutation of a horizontal flip: the given one, COCO's for 17 pose parts,
    else the identity (object classes do not swap)."""
    if flip_map is not None:
        fm = np.asarray(flip_map, dtype=np.int64)
        if fm.shape != (num_classes,) or sorted(fm.tolist()) != list(range(num_classes)):
            raise ValueError(f"flip_map: expected a permutation of 0..{num_classes - 1}, "
                             f"got {list(flip_map)}")
        return fm
    if kind == "pose" and num_classes == 17:
        return np.asarray(_COCO_FLIP_MAP, dtype=np.int64)
    return np.arange(num_classes, dtype=np.int64)


def input_size_for_scale(input_size: int, scale: float, divisor: int) -> int:
    """Square input side at ``scale``: ``input_size · scale`` rounded to a multiple of ``divisor``
    (at least one ``divisor``)."""
    return max(divisor, int(round(input_size * scale / divisor)) * divisor)


def preprocess(image: np.ndarray, input_size: int, output_size: int
               ) -> tuple[torch.Tensor, dict[str, np.ndarray | tuple[int, int]]]:
    """The validation transform: long side to ``input_size``, centred, padded, normalised.

    Args:
        image: BGR uint8 picture (as read by OpenCV).
        input_size: square network input side.
        output_size: output-map side (input_size / stride).

    Returns:
        The normalised RGB input and a meta dict with ``orig_size`` (h, w),
        ``input_transform`` (original → input pixels) and ``transform`` (original → output
        pixels), both 2×3 float64.

    Shapes:
        image: (H, W, 3) -> (3, input_size, input_size)
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected a uint8 BGR array (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    h, w = image.shape[:2]
    m_in = affine_matrix((h, w), input_size)
    m_out = compose(input_to_output(input_size, output_size), m_in)
    warped = warp_image(image, m_in, input_size)
    rgb = warped[..., ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    meta = {"orig_size": (h, w), "input_transform": m_in, "transform": m_out}
    return torch.from_numpy(normalize_image(rgb)), meta


def flip_back(out: StackOutput, flip_map: np.ndarray | Sequence[int]) -> StackOutput:
    """Maps of a horizontally flipped input brought back to the unflipped frame.

    Every map is mirrored along W (exact on the output grid with the pixel-centre convention)
    and class channels (heatmaps, per-class tags) are permuted with ``flip_map``.
    """
    perm = torch.as_tensor(np.asarray(flip_map, dtype=np.int64),
                           device=out.objects.heatmaps.device)
    obj = out.objects
    tags = obj.tags.flip(-1)
    if tags.shape[1] == obj.heatmaps.shape[1] and tags.shape[1] > 1:
        tags = tags[:, perm]
    objects = ObjectMaps(heatmaps=obj.heatmaps.flip(-1)[:, perm], tags=tags,
                         sizes=None if obj.sizes is None else obj.sizes.flip(-1))
    inter = None
    if out.interactions is not None:
        i = out.interactions
        inter = InteractionMaps(heatmaps=i.heatmaps.flip(-1), src=i.src.flip(-1),
                                dst=i.dst.flip(-1))
    return StackOutput(objects=objects, interactions=inter)


def merge_flip(a: StackOutput, b: StackOutput) -> StackOutput:
    """Heatmaps (and sizes) averaged, embeddings concatenated along E (E doubles).

    Shapes:
        tags (B, C_t, E, H, W) -> (B, C_t, 2E, H, W); src/dst (B, E, H, W) -> (B, 2E, H, W)
    """
    oa, ob = a.objects, b.objects
    sizes = None if oa.sizes is None else (oa.sizes + ob.sizes) / 2
    objects = ObjectMaps(heatmaps=(oa.heatmaps + ob.heatmaps) / 2,
                         tags=torch.cat([oa.tags, ob.tags], dim=2), sizes=sizes)
    inter = None
    if a.interactions is not None:
        ia, ib = a.interactions, b.interactions
        inter = InteractionMaps(heatmaps=(ia.heatmaps + ib.heatmaps) / 2,
                                src=torch.cat([ia.src, ib.src], dim=1),
                                dst=torch.cat([ia.dst, ib.dst], dim=1))
    return StackOutput(objects=objects, interactions=inter)


def _run(model: nn.Module, x: torch.Tensor, stacks: int | None, flip: bool,
         flip_map: np.ndarray) -> StackOutput:
    """One forward pass (flipped copy in the same batch when ``flip``); the last stack run."""
    if not flip:
        return model(x, stacks=stacks)[-1]
    b = x.shape[0]
    out = model(torch.cat([x, x.flip(-1)]), stacks=stacks)[-1]
    first = _slice(out, 0, b)
    second = flip_back(_slice(out, b, 2 * b), flip_map)
    return merge_flip(first, second)


def _slice(out: StackOutput, lo: int, hi: int) -> StackOutput:
    o = out.objects
    objects = ObjectMaps(heatmaps=o.heatmaps[lo:hi], tags=o.tags[lo:hi],
                         sizes=None if o.sizes is None else o.sizes[lo:hi])
    inter = None
    if out.interactions is not None:
        i = out.interactions
        inter = InteractionMaps(heatmaps=i.heatmaps[lo:hi], src=i.src[lo:hi], dst=i.dst[lo:hi])
    return StackOutput(objects=objects, interactions=inter)


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # align_corners=False matches the pixel-centre convention: with both inputs centred on the
    # image, output pixel i of the base grid sits at (i + 0.5)·r − 0.5 of a grid r times larger.
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def infer_maps(model: nn.Module, images: Sequence[np.ndarray], input_size: int,
               output_size: int, *, scales: Sequence[float] = (1.0,), flip: bool = False,
               flip_map: np.ndarray | Sequence[int] | None = None, stacks: int | None = None,
               device: str | torch.device = "cpu") -> tuple[StackOutput, list[dict]]:
    """Run the model on pictures with the test-time options and merge the maps.

    The base scale is the one closest to 1: its grid is where decoding happens and its tags
    (and link embeddings, box sizes) are used; heatmaps of the other scales are resized onto it
    and averaged with it (sum over scales / number of scales, so thresholds keep their meaning).
    With ``flip`` every scale also runs on the mirrored input, flipped back (class channels
    permuted by ``flip_map``); heatmaps are averaged and tags concatenated along E.

    Args:
        model: a StackedHourglass (in eval mode).
        images: BGR uint8 pictures.
        input_size: network input side at scale 1.
        output_size: output-map side at scale 1.
        scales: test scales.
        flip: flip test.
        flip_map: channel permutation of a flip (None: identity).
        stacks: early exit after this many stacks (None: all).
        device: where the model runs.

    Returns:
        The merged maps (on the CPU) and per image the meta dict of :func:`preprocess` at the
        base scale (``transform`` maps original pixels to the merged maps' grid).

    Shapes:
        -> heatmaps (B, C, H, W), tags (B, C_t, E·(2 if flip else 1), H, W), …
    """
    if not scales:
        raise ValueError("scales: expected at least one scale")
    divisor = getattr(model, "size_divisor", 1)
    stride = input_size // output_size
    base = min(range(len(scales)), key=lambda i: (abs(math.log(scales[i])), i))
    num_classes = getattr(model, "num_classes", None)
    fm = np.asarray(flip_map if flip_map is not None else np.arange(num_classes or 0))
    merged: StackOutput | None = None
    heat_sum: torch.Tensor | None = None
    link_sum: torch.Tensor | None = None
    metas: list[dict] = []
    order = [base] + [i for i in range(len(scales)) if i != base]
    for i in order:
        size_in = input_size_for_scale(input_size, scales[i], divisor)
        size_out = size_in // stride
        batch = [preprocess(img, size_in, size_out) for img in images]
        x = torch.stack([b[0] for b in batch]).to(device)
        out = _run(model, x, stacks, flip, fm)
        if i == base:
            merged = out
            metas = [b[1] for b in batch]
            heat_sum = out.objects.heatmaps.float()
            if out.interactions is not None:
                link_sum = out.interactions.heatmaps.float()
        else:
            grid = tuple(merged.objects.heatmaps.shape[-2:])
            heat_sum = heat_sum + _resize(out.objects.heatmaps.float(), grid)
            if link_sum is not None:
                link_sum = link_sum + _resize(out.interactions.heatmaps.float(), grid)
    n = len(scales)
    objects = ObjectMaps(heatmaps=(heat_sum / n).cpu(), tags=merged.objects.tags.float().cpu(),
                         sizes=None if merged.objects.sizes is None
                         else merged.objects.sizes.float().cpu())
    inter = None
    if merged.interactions is not None:
        inter = InteractionMaps(heatmaps=(link_sum / n).cpu(),
                                src=merged.interactions.src.float().cpu(),
                                dst=merged.interactions.dst.float().cpu())
    return StackOutput(objects=objects, interactions=inter), metas


# --------------------------------------------------------------------------- decoding


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


# --------------------------------------------------------------------------- data description


@dataclass
class DataInfo:
    """What inference needs to know about the data a model was trained on.

    Attributes:
        kind: "pose" or "relations".
        flip_map: channel permutation of a horizontal flip.
        class_names: part / object class names, or None.
        predicate_names: link class names, or None.
        skeleton: 0-based part pairs to draw, or None.
        categories: COCO categories (for result files), or None.
        predicate_categories: predicate categories, or None.
    """

    kind: str
    flip_map: np.ndarray
    class_names: list[str] | None = None
    predicate_names: list[str] | None = None
    skeleton: list[tuple[int, int]] | None = None
    categories: list[dict] | None = None
    predicate_categories: list[dict] | None = None


def data_info(cfg: Config, dataset: Dataset | None = None) -> DataInfo:
    """Names, skeleton and flip map from a dataset, else from the config's data files.

    Order for the flip map: ``cfg.data.flip_map``; the dataset's; the category's ``flip_map``
    field; left/right names; COCO's for 17 pose parts; identity. Synthetic data describe
    themselves without files; real data read the categories of the validation JSON when it
    exists.
    """
    c = cfg.model.num_classes
    kind = cfg.data.kind
    base = _base_dataset(dataset) if dataset is not None else None
    cats: list[dict] | None = None
    preds: list[dict] | None = None
    if base is not None:
        data = base.coco.dataset
        cats = list(data.get("categories", [])) or None
        preds = list(data.get("predicate_categories", [])) or None
    elif cfg.data.source == "synthetic":
        from aehg.data.synthetic import graph_categories, pose_category

        if kind == "pose":
            try:
                cats = [pose_category(c)]
            except ValueError:
                cats = None
        else:
            cats, preds = graph_categories(c, cfg.model.num_link_classes)
    else:
        path = Path(cfg.data.val_json)
        path = path if path.is_absolute() else Path(cfg.data.root) / path
        if path.is_file():
            import json

            try:
                data = json.loads(path.read_text())
                cats = list(data.get("categories", [])) or None
                preds = list(data.get("predicate_categories", [])) or None
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                log.warning("%s: cannot read category names; drawing without them", path)
    info = DataInfo(kind=kind, flip_map=np.arange(c), categories=cats,
                    predicate_categories=preds)
    flip_map = cfg.data.flip_map
    if kind == "pose":
        cat = next((x for x in cats or [] if x.get("keypoints")), None)
        if cat is not None and len(cat["keypoints"]) == c:
            info.class_names = [str(n) for n in cat["keypoints"]]
            info.skeleton = [(int(a) - 1, int(b) - 1) for a, b in cat.get("skeleton", [])]
            if flip_map is None and isinstance(base, CocoKeypointDataset):
                flip_map = base.flip_map.tolist()
            if flip_map is None and cat.get("flip_map") is not None:
                flip_map = list(cat["flip_map"])
            if flip_map is None:
                derived = derive_flip_map(info.class_names)
                if derived != list(range(c)):
                    flip_map = derived
    else:
        if cats is not None and len(cats) == c:
            info.class_names = [str(x["name"]) for x in sorted(cats, key=lambda x: x["id"])]
            info.categories = sorted(cats, key=lambda x: x["id"])
        if preds is not None and len(preds) == cfg.model.num_link_classes:
            info.predicate_names = [str(x["name"]) for x in sorted(preds, key=lambda x: x["id"])]
            info.predicate_categories = sorted(preds, key=lambda x: x["id"])
    info.flip_map = resolve_flip_map(flip_map, c, kind)
    return info


def _base_dataset(data: Any) -> CocoBase:
    """The CocoKeypointDataset / RelationDataset under a loader or Subset."""
    d = data.dataset if isinstance(data, DataLoader) else data
    while isinstance(d, Subset):
        d = d.dataset
    if not isinstance(d, CocoBase):
        raise TypeError(f"expected a CocoKeypointDataset or RelationDataset (or a DataLoader / "
                        f"Subset of one), got {type(d).__name__}")
    return d


def _image_ids(data: Any) -> list[int]:
    """The image ids a dataset (or Subset of one) covers, in order."""
    base = _base_dataset(data)
    d = data.dataset if isinstance(data, DataLoader) else data
    index: list[int] = list(range(len(base.ids)))
    chain = []
    while isinstance(d, Subset):
        chain.append(d.indices)
        d = d.dataset
    for indices in reversed(chain):
        index = [index[i] for i in indices]
    return [base.ids[i] for i in index]


# --------------------------------------------------------------------------- predictor


def config_from_checkpoint(checkpoint: Mapping[str, Any], overrides: Sequence[str] = (),
                           source: str = "checkpoint") -> Config:
    """The config stored in a checkpoint, with ``key=value`` overrides applied.

    Raises:
        ValueError: the checkpoint has no config.
        ConfigError: a stored value or an override is invalid.
    """
    from aehg.config import ConfigError, merge_dicts, parse_overrides

    stored = checkpoint.get("config")
    if not isinstance(stored, Mapping):
        raise ValueError(f"{source}: has no 'config' entry; pass the config explicitly")

    try:
        return config_from_dict(merge_dicts(stored, parse_overrides(list(overrides))))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """Run a trained model on pictures.

    Args:
        cfg: the run's config; None takes the one stored in the checkpoint.
        checkpoint: a checkpoint path (loaded with ``torch.load(weights_only=True)``) or an
            already loaded checkpoint dict.
        device: "cpu", "cuda", "cuda:1", … or None/"auto" (cuda when available).
        flip: flip test (default ``cfg.eval.flip_test``).
        scales: test scales (default ``cfg.eval.scales``).
        stacks: early exit after this many stacks (default ``cfg.eval.stacks``: all).
        batch_size: pictures per forward pass in :meth:`predict_batch`.
        info: names / skeleton / flip map (default :func:`data_info` of ``cfg``).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: the checkpoint is unreadable, has no config when ``cfg`` is None, or does
            not fit the architecture of ``cfg.model`` (the message names the keys).

    Example:
        >>> p = Predictor(cfg, "best.pt", flip=True, stacks=1)
        >>> preds = p.predict_batch(["a.jpg", "b.jpg"])
    """

    def __init__(self, cfg: Config | None, checkpoint: str | os.PathLike[str] | Mapping[str, Any],
                 *, device: str | torch.device | None = None, flip: bool | None = None,
                 scales: Sequence[float] | None = None, stacks: int | None = None,
                 batch_size: int = 8, info: DataInfo | None = None) -> None:
        source = "checkpoint"
        if isinstance(checkpoint, Mapping):
            ckpt = checkpoint
        else:
            source = f"checkpoint {checkpoint}"
            ckpt = load_checkpoint(checkpoint)
        if cfg is None:
            cfg = config_from_checkpoint(ckpt, source=source)
        if "model" not in ckpt:
            raise ValueError(f"{source}: has no 'model' entry (expected a training checkpoint "
                             f"with the model's state dict)")
        self.cfg = cfg
        self.device = _resolve_device(device)
        model = build_model(cfg.model)
        load_model_weights(model, ckpt, source=source)
        self.model = model.to(self.device).eval()
        self.flip = cfg.eval.flip_test if flip is None else bool(flip)
        self.scales = list(cfg.eval.scales if scales is None else scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales: expected positive scales, got {self.scales}")
        self.stacks = cfg.eval.stacks if stacks is None else int(stacks)
        if self.stacks is not None and not 1 <= self.stacks <= cfg.model.num_stacks:
            raise ValueError(f"stacks: expected 1..{cfg.model.num_stacks} (model.num_stacks), "
                             f"got {self.stacks}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.info = info if info is not None else data_info(cfg)

    def _load(self, image: str | os.PathLike[str] | np.ndarray, index: int
              ) -> tuple[np.ndarray, str | None]:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image), Path(image).name
        arr = np.asarray(image)
        if arr.ndim == 2 and arr.dtype == np.uint8:
            arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"images[{index}]: expected a path or a uint8 BGR array (H, W, 3), "
                             f"got {arr.dtype} {arr.shape}")
        return arr, None

    def predict(self, image: str | os.PathLike[str] | np.ndarray,
                image_id: int | None = None) -> Prediction:
        """Predict one picture (a path or a BGR uint8 array as read by OpenCV)."""
        return self.predict_batch([image], None if image_id is None else [image_id])[0]

    def predict_batch(self, images: Sequence[str | os.PathLike[str] | np.ndarray],
                      image_ids: Sequence[int] | None = None) -> list[Prediction]:
        """Predict pictures, ``batch_size`` at a time; one :class:`Prediction` each, in order.

        Raises:
            ImageReadError: a path is missing or not a picture (the message names it).
        """
        if image_ids is not None and len(image_ids) != len(images):
            raise ValueError(f"image_ids: expected {len(images)} ids, got {len(image_ids)}")
        out: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            loaded = [self._load(img, start + i) for i, img in enumerate(chunk)]
            maps, metas = infer_maps(self.model, [a for a, _ in loaded], self.cfg.data.input_size,
                                     self.cfg.data.output_size, scales=self.scales,
                                     flip=self.flip, flip_map=self.info.flip_map,
                                     stacks=self.stacks, device=self.device)
            for i, (meta, (_, name)) in enumerate(zip(metas, loaded, strict=True)):
                meta["file_name"] = name
                meta["image_id"] = None if image_ids is None else image_ids[start + i]
            out += decode_predictions(maps, metas, self.cfg.eval, self.cfg.data.kind,
                                      self.info.class_names if self.cfg.data.kind ==
                                      "relations" else None, self.info.predicate_names)
        return out


# --------------------------------------------------------------------------- evaluation


def _batches(data: Any, batch_size: int) -> Iterable[dict[str, Any]]:
    if isinstance(data, DataLoader):
        yield from data
        return
    for start in range(0, len(data), batch_size):
        yield collate([data[i] for i in range(start, min(start + batch_size, len(data)))])


@torch.no_grad()
def predict_dataset(model: nn.Module, data: Dataset | DataLoader, cfg: Config, *,
                    device: str | torch.device | None = None,
                    progress: bool = False) -> list[Prediction]:
    """Predictions for every image of a validation dataset or loader, in original pixels.

    With one test scale the batches of ``data`` (validation transform, ``meta["transform"]``)
    feed the model directly; with several (``cfg.eval.scales``) each original picture is read
    again and resized per scale. Flip test, early exit and decoding follow ``cfg.eval``.
    The model's train/eval mode is restored afterwards.

    Args:
        model: the network (a DDP wrapper is unwrapped).
        data: a dataset of aehg.data (validation mode) or a DataLoader over one.
        cfg: the run's config (``eval``, ``data.kind``, ``data.input_size``, …).
        device: where to run (default: the model's device).
        progress: show a tqdm bar.
    """
    net = unwrap_model(model)
    if device is None:
        device = next(net.parameters()).device
    info = data_info(cfg, data)
    kind = cfg.data.kind
    ecfg = cfg.eval
    names = info.class_names if kind == "relations" else None
    was_training = net.training
    net.eval()
    preds: list[Prediction] = []
    try:
        if len(ecfg.scales) == 1 and ecfg.scales[0] == 1.0:
            batches: Iterable[dict[str, Any]] = _batches(data, cfg.train.batch_size)
            if progress:
                from tqdm import tqdm

                batches = tqdm(batches, desc="evaluate", unit="batch")
            for batch in batches:
                maps = _run(net, batch["image"].to(device), ecfg.stacks, ecfg.flip_test,
                            info.flip_map)
                maps = _to_cpu(maps)
                preds += decode_predictions(maps, batch["meta"], ecfg, kind, names,
                                            info.predicate_names)
        else:
            base = _base_dataset(data)
            ids = _image_ids(data)
            chunks = range(0, len(ids), cfg.train.batch_size)
            if progress:
                from tqdm import tqdm

                chunks = tqdm(chunks, desc="evaluate", unit="batch")
            for start in chunks:
                chunk = ids[start:start + cfg.train.batch_size]
                images = [base.read_image(i) for i in chunk]
                maps, metas = infer_maps(net, images, cfg.data.input_size,
                                         cfg.data.output_size, scales=ecfg.scales,
                                         flip=ecfg.flip_test, flip_map=info.flip_map,
                                         stacks=ecfg.stacks, device=device)
                for meta, img_id in zip(metas, chunk, strict=True):
                    meta["image_id"] = img_id
                    meta["file_name"] = base.coco.imgs[img_id]["file_name"]
                preds += decode_predictions(maps, metas, ecfg, kind, names,
                                            info.predicate_names)
    finally:
        net.train(was_training)
    return preds


def _to_cpu(out: StackOutput) -> StackOutput:
    o = out.objects
    objects = ObjectMaps(o.heatmaps.float().cpu(), o.tags.float().cpu(),
                         None if o.sizes is None else o.sizes.float().cpu())
    inter = None
    if out.interactions is not None:
        i = out.interactions
        inter = InteractionMaps(i.heatmaps.float().cpu(), i.src.float().cpu(),
                                i.dst.float().cpu())
    return StackOutput(objects, inter)


def coco_results(predictions: Sequence[Prediction], dataset: Dataset) -> list[dict[str, Any]]:
    """COCO results of the predictions: keypoints for pose, boxes for objects."""
    base = _base_dataset(dataset)
    out: list[dict[str, Any]] = []
    for p in predictions:
        if p.image_id is None:
            raise ValueError("predictions: every prediction needs an image_id for COCO results")
        if isinstance(base, CocoKeypointDataset):
            out += keypoints_to_results(p.keypoints, p.scores, p.image_id, base.category_id)
        elif p.boxes is not None:
            out += boxes_to_results(p.boxes, p.scores, p.labels, p.image_id, base.cat_ids)
    return out


def score_predictions(predictions: Sequence[Prediction], dataset: Dataset, cfg: Config, *,
                      verbose: bool = False) -> dict[str, float]:
    """Score predictions against a dataset's annotations.

    Pose: COCO keypoint ``AP, AP50, AP75, APm, APl, AR, …`` over the predicted images (OKS
    sigmas of the dataset). Relations: ``R@K``, ``ngR@K``, ``mR@K`` for ``cfg.eval.recall_ks``,
    ``object_recall`` (ground-truth objects matched by a same-class prediction with IoU ≥ 0.5)
    and, when the model regresses boxes, COCO box ``object_AP`` / ``object_AP50``.
    """
    base = _base_dataset(dataset)
    image_ids = [p.image_id for p in predictions]
    if isinstance(base, CocoKeypointDataset):
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
    if predictions and predictions[0].boxes is not None:
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

    Equivalent to ``score_predictions(predict_dataset(model, data, cfg), data, cfg)``. With a
    DataLoader over a DistributedSampler each rank scores only its share of the images: call
    it on one rank with a non-distributed loader for the full figure.

    Returns:
        Pose: ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl`` (fractions). Relations:
        ``R@K, ngR@K, mR@K`` per K, ``object_recall`` and, with boxes, ``object_AP``,
        ``object_AP50``. A natural "best checkpoint" metric is ``AP`` resp. ``R@50``.
    """
    preds = predict_dataset(model, data, cfg, device=device)
    return score_predictions(preds, data, cfg, verbose=verbose)


# --------------------------------------------------------------------------- command-line jobs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """The picture to process, or the pictures of a folder (sorted, by file suffix).

    Raises:
        FileNotFoundError: ``path`` does not exist, or the folder holds no picture.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path} (expected an image or a folder)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in
                   IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image in folder {path} (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)})")
    return files


def evaluate_checkpoint(cfg: Config, checkpoint: str | os.PathLike[str],
                        output_dir: str | os.PathLike[str] | None = None, *,
                        device: str | torch.device | None = None, verbose: bool = True,
                        progress: bool = True) -> dict[str, float]:
    """Evaluate a checkpoint on the validation split of ``cfg`` and write the results.

    Writes ``results.json`` (COCO keypoint results for pose; the relation-results JSON of
    DESIGN §5 for relations) and ``metrics.json`` into ``output_dir`` (default: ``eval/``
    beside the checkpoint) and prints the metric table when ``verbose``.

    Raises:
        FileNotFoundError: missing checkpoint or data.
        ValueError: unreadable checkpoint, or one of another architecture (names the keys).
    """
    from aehg.data.loader import build_dataset
    from aehg.export import graphs_to_relation_results
    from aehg.io import write_json

    ckpt = load_checkpoint(checkpoint)
    model = build_model(cfg.model)
    load_model_weights(model, ckpt, source=f"checkpoint {checkpoint}")
    dev = _resolve_device(device if device is not None else cfg.train.device)
    model = model.to(dev).eval()
    dataset = build_dataset(cfg, "val")
    preds = predict_dataset(model, dataset, cfg, device=dev, progress=progress)
    metrics = score_predictions(preds, dataset, cfg, verbose=verbose)
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


def run_inference(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                  output_dir: str | os.PathLike[str], *, fmt: str = "json",
                  skip_unreadable: bool = False, progress: bool = True) -> list[Prediction]:
    """Predict pictures and write, per picture, a drawing and a graph file.

    For ``photo.jpg`` this writes ``photo.jpg`` (the drawing; PNG for other inputs) and
    ``photo.json`` (networkx node-link) or ``photo.graphml``, plus ``results.json`` (the
    relation-results JSON of all pictures; image ids are the pictures' positions in
    ``inputs``).

    Raises:
        ImageReadError: a picture is missing or unreadable (unless ``skip_unreadable``: then it
            is logged and left out).
    """
    from tqdm import tqdm

    from aehg.export import graphs_to_relation_results, write_graphml, write_node_link
    from aehg.visualize import draw_graph, save_image

    if fmt not in ("json", "graphml"):
        raise ValueError(f"fmt: expected 'json' or 'graphml', got {fmt!r}")
    out_dir = Path(output_dir)
    paths = [Path(p) for p in inputs]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError("inputs: two pictures share a file stem; their outputs would collide")
    for p in paths:
        if out_dir.resolve() == p.resolve().parent:
            raise ValueError(f"output folder {out_dir} is the folder of the input {p}; the "
                             f"drawings would overwrite the pictures, choose another folder")
    info = predictor.info
    preds: list[Prediction] = []
    bar = tqdm(total=len(paths), desc="infer", unit="img", disable=not progress)
    for start in range(0, len(paths), predictor.batch_size):
        chunk, images, ids = [], [], []
        for i, p in enumerate(paths[start:start + predictor.batch_size], start=start):
            try:
                images.append(read_image(p))
            except ImageReadError as exc:
                if not skip_unreadable:
                    raise
                log.warning("skipping %s", exc)
                continue
            chunk.append(p)
            ids.append(i)
        for path, image, pred in zip(chunk, images, predictor.predict_batch(images, ids),
                                     strict=True):
            pred.file_name = path.name
            pred.graph.graph["file_name"] = path.name
            drawing = draw_graph(image, pred.graph, info.class_names, info.predicate_names,
                                 skeleton=info.skeleton,
                                 score_threshold=predictor.cfg.eval.detection_threshold)
            suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            save_image(out_dir / f"{path.stem}{suffix}", drawing)
            if fmt == "json":
                write_node_link(out_dir / f"{path.stem}.json", pred.graph)
            else:
                write_graphml(out_dir / f"{path.stem}.graphml", pred.graph)
            preds.append(pred)
        bar.update(len(paths[start:start + predictor.batch_size]))
    bar.close()
    results = graphs_to_relation_results([p.graph for p in preds], info.categories,
                                         info.predicate_categories)
    from aehg.io import write_json

    write_json(out_dir / "results.json", results)
    return preds
