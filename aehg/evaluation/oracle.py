"""The representation's ceiling: ground truth rendered as perfect maps, decoded and scored
(docs/design.md "Slots").

:func:`oracle_maps` renders one image's objects and relationships into the output layout of a
relation model (any object / relation slots, any output size): the training targets' Gaussians
in the class (link) heatmaps, and exact tags, box sizes and link embeddings at the centre
(link) pixels. Where targets collide on one pixel and slot, the maps hold the loss-optimal value
(heat: the max; box size and link embeddings: the mean; tag: the first object's, which is then
the reference tag of every object there). :func:`oracle_scores` does this for every image of a
relation-format dataset, decodes with :func:`aehg.inference.decode.decode_predictions`
(:func:`aehg.decode_objects` + :func:`aehg.build_graph`) and scores with
:func:`aehg.evaluation.evaluate_scene_graph` and :func:`aehg.evaluation.object_recall`.

Example:
    >>> data, _ = convert_visual_genome(...)
    >>> oracle_scores(data, output_size=128, object_slots=3, relation_slots=6)["ngR@100"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from aehg.config import EvalConfig
from aehg.data.targets import gaussian_patch
from aehg.data.transforms import affine_matrix, compose, input_to_output, transform_boxes
from aehg.evaluation.scene_graph import evaluate, object_recall
from aehg.inference.decode import decode_predictions
from aehg.models.hourglass import InteractionMaps, ObjectMaps, StackOutput
from aehg.models.slots import draw_slot_gaussians

__all__ = ["oracle_maps", "oracle_scores", "relation_ground_truth"]

# Tag of object n: (n + 1) · _TAG_STEP, far apart compared with build_graph's max_distance.
_TAG_STEP = 4.0


def _rank_at_pixel(pixel: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rank of each valid row among the valid rows on its pixel (row order); −1 if invalid."""
    rank = np.full(len(pixel), -1, dtype=np.int64)
    rows = np.nonzero(valid)[0]
    if rows.size:
        order = rows[np.argsort(pixel[rows], kind="stable")]
        sp = pixel[order]
        start = np.r_[True, sp[1:] != sp[:-1]]
        first = np.nonzero(start)[0]
        rank[order] = np.arange(len(order)) - first[np.cumsum(start) - 1]
    return rank


def _mean_at(index: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` rows per flat ``index`` over ``size`` cells, and the cells written."""
    total = np.zeros((size, values.shape[1]))
    count = np.zeros(size)
    np.add.at(total, index, values)
    np.add.at(count, index, 1.0)
    return total / np.maximum(count, 1)[:, None], count > 0


def oracle_maps(boxes: np.ndarray, labels: np.ndarray, relations: np.ndarray,
                orig_size: tuple[int, int], *, num_classes: int, num_predicates: int,
                input_size: int = 512, output_size: int = 128, object_slots: int = 1,
                relation_slots: int = 1, sigma: float = 2.0
                ) -> tuple[StackOutput, np.ndarray]:
    """Perfect maps of one image in a relation model's output layout.

    The geometry is the validation transform (long side to ``input_size``, centred) and the
    targets' rules (:func:`aehg.data.build_targets`): an object sits at the rounded centre of
    its box (clipped to the map), a link at the floored midpoint of its two boxes' centres.
    Objects (links) on one pixel take the slots in order; those beyond the slots are left out
    with more than one slot, while one slot holds them all (the layout without slots).

    Args:
        boxes: x1, y1, x2, y2 per object in original pixels.
        labels: class index per object.
        relations: subject row, object row, predicate index per relationship.
        orig_size: (h, w) of the picture.
        num_classes, num_predicates: C and R.
        input_size, output_size: network input and output-map sides.
        object_slots, relation_slots: S_o, S_r.
        sigma: Gaussian of the heatmaps, in output pixels.

    Returns:
        ``(maps, transform)``: the maps of a batch of one (E = 1, heat in [0, 1]) and the 2×3
        affine from original to map pixels.

    Shapes:
        boxes: (N, 4); labels: (N,); relations: (M, 3) -> maps.objects.heatmaps
        (1, S_o·C, H, W), tags (1, S_o, 1, H, W), sizes (1, 2·S_o, H, W);
        maps.interactions.heatmaps (1, S_r·R, H, W), src, dst (1, S_r, H, W)
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    relations = np.asarray(relations, np.int64).reshape(-1, 3)
    if len(labels) != len(boxes):
        raise ValueError(f"labels: expected one per box ({len(boxes)}), got {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels: expected classes in [0, {num_classes}), got "
                         f"{labels.min()}..{labels.max()}")
    if len(relations) and (relations[:, :2].min() < 0 or relations[:, :2].max() >= len(boxes)
                           or relations[:, 2].min() < 0
                           or relations[:, 2].max() >= num_predicates):
        raise ValueError(f"relations: expected object rows in [0, {len(boxes)}) and predicates "
                         f"in [0, {num_predicates})")
    so, sr, size = int(object_slots), int(relation_slots), int(output_size)
    hw = size * size
    m_out = compose(input_to_output(input_size, size), affine_matrix(orig_size, input_size))
    b = np.clip(transform_boxes(boxes, m_out), -0.5, size - 0.5)
    centre = (b[:, :2] + b[:, 2:]) / 2
    wh = b[:, 2:] - b[:, :2]
    px, py = np.floor(centre[:, 0] + 0.5).astype(np.int64), np.floor(
        centre[:, 1] + 0.5).astype(np.int64)
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size) & (wh > 0).all(axis=1)
    pixel = np.where(inside, py * size + px, 0)
    rank = _rank_at_pixel(pixel, inside)
    slot = np.where(so > 1, rank, 0)
    has_slot = inside & (rank < so) if so > 1 else inside
    patch = torch.from_numpy(gaussian_patch(sigma))

    heat = draw_slot_gaussians(
        (1, so * num_classes, size, size),
        torch.from_numpy(slot * (num_classes * hw) + labels * hw + pixel)[None],
        torch.from_numpy(has_slot)[None], patch)
    cell = slot * hw + pixel                                      # (slot, pixel) of each row
    n = len(labels)
    tag_value = (np.arange(n) + 1.0) * _TAG_STEP
    # The first object of a cell gives the cell's tag: write rows in reverse order.
    rows = np.nonzero(has_slot)[0][::-1]
    tags = np.zeros(so * hw)
    tags[cell[rows]] = tag_value[rows]
    ref = np.where(has_slot, tags[np.where(has_slot, cell, 0)], np.nan)   # reference tags
    mean_wh, written = _mean_at(cell[has_slot], wh[has_slot], so * hw)
    sizes = np.where(written[:, None], mean_wh, 0.0).reshape(so, hw, 2).transpose(0, 2, 1)

    # Links: both ends with a reference tag, location inside the map.
    s_row, d_row, pred = relations[:, 0], relations[:, 1], relations[:, 2]
    mid = (centre[s_row] + centre[d_row]) / 2
    lx, ly = np.floor(mid[:, 0]).astype(np.int64), np.floor(mid[:, 1]).astype(np.int64)
    ok = (has_slot[s_row] & has_slot[d_row] & (lx >= 0) & (lx < size) & (ly >= 0)
          & (ly < size)) if len(relations) else np.zeros(0, bool)
    loc = np.where(ok, ly * size + lx, 0)
    lrank = _rank_at_pixel(loc, ok)
    lslot = np.where(sr > 1, lrank, 0)
    lhas = ok & (lrank < sr) if sr > 1 else ok
    link_heat = draw_slot_gaussians(
        (1, sr * num_predicates, size, size),
        torch.from_numpy(lslot * (num_predicates * hw) + pred * hw + loc)[None],
        torch.from_numpy(lhas)[None], patch)
    lcell = lslot * hw + loc
    ends = np.stack([ref[s_row], ref[d_row]], axis=1) if len(relations) else np.zeros((0, 2))
    mean_ends, _ = _mean_at(lcell[lhas], ends[lhas], sr * hw)

    def t(a: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(shape)

    objects = ObjectMaps(heat, t(tags, (1, so, 1, size, size)),
                         t(sizes, (1, 2 * so, size, size)), slots=so)
    inter = InteractionMaps(link_heat, t(mean_ends[:, 0], (1, sr, size, size)),
                            t(mean_ends[:, 1], (1, sr, size, size)), slots=sr)
    return StackOutput(objects, inter), m_out


def relation_ground_truth(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per image of a relation-format dict (docs/design.md §5): ``image_id``, ``orig_size``
    (h, w), ``boxes`` x1, y1, x2, y2 in pixels, ``labels`` (class index in category-id order)
    and ``relations`` (subject row, object row, predicate index in predicate-id order);
    crowd annotations and relationships naming them are left out. Images in id order.
    """
    cats = sorted(c["id"] for c in data["categories"])
    preds = sorted(p["id"] for p in data["predicate_categories"])
    cat_index = {c: k for k, c in enumerate(cats)}
    pred_index = {p: k for k, p in enumerate(preds)}
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            anns.setdefault(a["image_id"], []).append(a)
    rels: dict[int, list[dict]] = {}
    for r in data["relationships"]:
        rels.setdefault(r["image_id"], []).append(r)
    out = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        objs = anns.get(img["id"], [])
        row = {a["id"]: i for i, a in enumerate(objs)}
        boxes = np.array([a["bbox"] for a in objs], np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        rel = [(row[r["subject_id"]], row[r["object_id"]], pred_index[r["predicate_id"]])
               for r in rels.get(img["id"], [])
               if r["subject_id"] in row and r["object_id"] in row]
        out.append({"image_id": img["id"], "orig_size": (img["height"], img["width"]),
                    "boxes": boxes,
                    "labels": np.array([cat_index[a["category_id"]] for a in objs], np.int64),
                    "relations": np.array(rel, np.int64).reshape(-1, 3)})
    return out


def oracle_scores(data: Mapping[str, Any], *, input_size: int = 512, output_size: int = 128,
                  object_slots: int = 1, relation_slots: int = 1, sigma: float = 2.0,
                  eval_cfg: EvalConfig | None = None, ks: Sequence[int] = (20, 50, 100)
                  ) -> dict[str, float]:
    """Scene-graph figures of perfect maps: the ceiling of a layout on a dataset.

    Args:
        data: a relation-format dict (e.g. from :func:`aehg.data.convert_visual_genome`).
        input_size, output_size, object_slots, relation_slots, sigma: the layout, as for
            :func:`oracle_maps`.
        eval_cfg: decoding parameters (defaults when None; ``graph_constraint`` is ignored:
            the graph constraint of R@K is applied by the evaluation).
        ks: the K of R@K.

    Returns:
        ``R@K`` (graph constraint), ``ngR@K`` (none), ``mR@K``, ``ng-mR@K``,
        ``object_recall`` (IoU ≥ 0.5, same class), ``objects`` and ``relations`` (ground-truth
        counts), ``images``.
    """
    eval_cfg = EvalConfig() if eval_cfg is None else eval_cfg
    num_classes = len(data["categories"])
    num_predicates = len(data["predicate_categories"])
    gts = relation_ground_truth(data)
    # Decoded without the graph constraint: evaluate() applies it for R@K (docs/design.md §6).
    cfg = EvalConfig(**{**eval_cfg.__dict__, "graph_constraint": False})
    preds = []
    for gt in gts:
        maps, m_out = oracle_maps(gt["boxes"], gt["labels"], gt["relations"], gt["orig_size"],
                                  num_classes=num_classes, num_predicates=num_predicates,
                                  input_size=input_size, output_size=output_size,
                                  object_slots=object_slots, relation_slots=relation_slots,
                                  sigma=sigma)
        meta = [{"transform": m_out, "orig_size": gt["orig_size"], "image_id": gt["image_id"]}]
        preds.append(decode_predictions(maps, meta, cfg, kind="relations")[0].scene_graph())
    gt_eval = [{k: g[k] for k in ("boxes", "labels", "relations")} for g in gts]
    out = evaluate(gt_eval, preds, ks=ks)
    out["object_recall"] = object_recall(gt_eval, preds)
    out["objects"] = float(sum(len(g["labels"]) for g in gts))
    out["relations"] = float(sum(len(g["relations"]) for g in gts))
    out["images"] = float(len(gts))
    return out
