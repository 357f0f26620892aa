"""Scene-graph metrics: Recall@K, no-graph-constraint Recall@K and mean Recall@K
(docs/design.md §6).

The definitions are those of neural-motifs and Scene-Graph-Benchmark (SGGen / "SGDet"): a
ground-truth triplet ``(subject, predicate, object)`` is hit when one of the K best-ranked
predicted triplets has the same subject, object and predicate labels and overlaps the
ground-truth subject and object boxes with IoU ≥ 0.5 each (IoU with the "+1 pixel" box
convention of those code bases). One prediction may hit several ground-truth triplets. Recall
is computed per image and averaged over the images with at least one ground-truth relation.

* ``R@K`` (graph constraint): for each ordered pair of predicted instances only the
  best-scoring predicate is kept before ranking.
* ``ngR@K`` (no graph constraint): every predicted triplet is ranked, so one pair may
  contribute several predicates.
* ``mR@K``: recall per predicate class (with the graph constraint), averaged over the images
  whose ground truth contains that predicate, then averaged over the predicate classes that
  occur in the ground truth. (Scene-Graph-Benchmark divides by the size of the predicate
  vocabulary instead, counting absent predicates as 0; pass ``num_predicates`` for that.)

Example:
    >>> gt = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 2],
    ...       "relations": [[0, 1, 3]]}
    >>> pred = dict(gt, relation_scores=[0.9])
    >>> evaluate([gt], [pred])["R@20"]
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["apply_graph_constraint", "box_iou", "evaluate", "object_recall", "triplet_matches"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes with the "+1 pixel" convention (width = x2 − x1 + 1).

    Shapes:
        a: (M, 4), b: (N, 4) -> (M, N)
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + 1.0, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def _as_image(d: Mapping[str, Any], where: str, with_scores: bool) -> dict[str, np.ndarray]:
    """Check one per-image dict and return it as numpy arrays."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{where}: expected a dict with boxes/labels/relations, "
                        f"got {type(d).__name__}")
    keys = ("boxes", "labels", "relations") + (("relation_scores",) if with_scores else ())
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)} "
                         f"(expected {', '.join(keys)})")
    boxes = np.asarray(d["boxes"], dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    labels = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
    rels = np.asarray(d["relations"], dtype=np.int64)
    if rels.size == 0:
        rels = rels.reshape(0, 3)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes: expected shape (M, 4), got {boxes.shape}")
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"{where}: labels: expected {boxes.shape[0]} entries (one per box), "
                         f"got {labels.shape[0]}")
    if rels.ndim != 2 or rels.shape[1] != 3:
        raise ValueError(f"{where}: relations: expected shape (R, 3) = subject, object, "
                         f"predicate, got {rels.shape}")
    if len(rels) and (rels[:, :2].min() < 0 or rels[:, :2].max() >= len(boxes)):
        raise ValueError(f"{where}: relations: subject/object indices must lie in "
                         f"[0, {len(boxes)}), got range [{rels[:, :2].min()}, "
                         f"{rels[:, :2].max()}]")
    out = {"boxes": boxes, "labels": labels, "relations": rels}
    if with_scores:
        scores = np.asarray(d["relation_scores"], dtype=np.float64).reshape(-1)
        if scores.shape[0] != rels.shape[0]:
            raise ValueError(f"{where}: relation_scores: expected {rels.shape[0]} entries "
                             f"(one per relation), got {scores.shape[0]}")
        out["relation_scores"] = scores
    return out


def apply_graph_constraint(relations: np.ndarray, scores: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Keep, for each ordered (subject, object) pair, only its best-scoring predicate.

    Ties keep the earliest triplet. Returns the kept triplets sorted by descending score.

    Shapes:
        relations: (Q, 3), scores: (Q,) -> (Q', 3), (Q',)
    """
    relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    pairs = relations[order, :2]
    # np.unique returns the first occurrence of each pair in the score-sorted order: the best.
    _, first = np.unique(pairs, axis=0, return_index=True)
    keep = order[np.sort(first)]
    return relations[keep], scores[keep]


def _rank(relations: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    return relations[order], scores[order]


def triplet_matches(gt: Mapping[str, Any], pred: Mapping[str, Any],
                    iou_threshold: float = 0.5) -> np.ndarray:
    """Which predicted triplets hit which ground-truth triplets (labels equal, both IoU ≥ thr).

    Predicted triplets are taken in the order given (rank them first).

    Shapes:
        -> (G, Q) bool, G ground-truth relations, Q predicted relations
    """
    g_rel, p_rel = gt["relations"], pred["relations"]
    g_lab, p_lab = gt["labels"], pred["labels"]
    same = ((g_lab[g_rel[:, 0]][:, None] == p_lab[p_rel[:, 0]][None, :])
            & (g_lab[g_rel[:, 1]][:, None] == p_lab[p_rel[:, 1]][None, :])
            & (g_rel[:, 2][:, None] == p_rel[:, 2][None, :]))
    if not same.any():
        return same
    iou = box_iou(gt["boxes"], pred["boxes"])  # (M, P), indexed by both ends of the triplets
    sub_ok = iou[g_rel[:, 0][:, None], p_rel[:, 0][None, :]] >= iou_threshold
    obj_ok = iou[g_rel[:, 1][:, None], p_rel[:, 1][None, :]] >= iou_threshold
    return same & sub_ok & obj_ok


def _first_hit(match: np.ndarray) -> np.ndarray:
    """Rank (0-based) of the first prediction hitting each ground-truth triplet; inf if none.

    Shapes:
        match: (G, Q) -> (G,)
    """
    if match.shape[1] == 0:
        return np.full(match.shape[0], np.inf)
    first = np.argmax(match, axis=1).astype(np.float64)
    first[~match.any(axis=1)] = np.inf
    return first


def evaluate(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
             ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5,
             num_predicates: int | None = None) -> dict[str, float]:
    """Scene-graph Recall@K, no-graph-constraint Recall@K and mean Recall@K.

    Args:
        gts: one dict per image: ``boxes`` xyxy, ``labels`` object classes, ``relations``
            rows (subject index, object index, predicate) into ``boxes``.
        preds: one dict per image, same keys plus ``relation_scores`` (the ranking score of
            each predicted triplet; higher is better).
        ks: the K values.
        iou_threshold: box IoU needed for subject and object (0.5).
        num_predicates: when given, ``mR@K`` averages over this many predicate classes
            (absent ones count 0, as Scene-Graph-Benchmark does); by default it averages over
            the predicates that occur in the ground truth (docs/design.md §6).

    Returns:
        ``{"R@K": …, "ngR@K": …, "mR@K": …}`` for every K, as fractions in [0, 1]; NaN when no
        image has a ground-truth relation.

    Shapes:
        gts[i]: boxes (M, 4), labels (M,), relations (R, 3)
        preds[i]: boxes (P, 4), labels (P,), relations (Q, 3), relation_scores (Q,)
    """
    if len(gts) != len(preds):
        raise ValueError(f"gts and preds: expected one prediction per image, got {len(gts)} "
                         f"ground-truth images and {len(preds)} predictions")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive integers, got {ks}")
    karr = np.asarray(ks, dtype=np.float64)
    recall_gc: list[np.ndarray] = []  # per image: (len(ks),)
    recall_ng: list[np.ndarray] = []
    per_pred: dict[int, list[np.ndarray]] = {}  # predicate -> per-image (len(ks),) recalls
    for i, (g_raw, p_raw) in enumerate(zip(gts, preds, strict=True)):
        gt = _as_image(g_raw, f"gts[{i}]", with_scores=False)
        pred = _as_image(p_raw, f"preds[{i}]", with_scores=True)
        n_gt = len(gt["relations"])
        if n_gt == 0:
            continue
        ng_rel, _ = _rank(pred["relations"], pred["relation_scores"])
        gc_rel, _ = apply_graph_constraint(pred["relations"], pred["relation_scores"])
        first_ng = _first_hit(triplet_matches(gt, dict(pred, relations=ng_rel), iou_threshold))
        first_gc = _first_hit(triplet_matches(gt, dict(pred, relations=gc_rel), iou_threshold))
        hit_ng = first_ng[:, None] < karr[None, :]  # (G, len(ks))
        hit_gc = first_gc[:, None] < karr[None, :]
        recall_ng.append(hit_ng.mean(axis=0))
        recall_gc.append(hit_gc.mean(axis=0))
        predicates, inverse = np.unique(gt["relations"][:, 2], return_inverse=True)
        counts = np.bincount(inverse, minlength=len(predicates)).astype(np.float64)
        hits = np.zeros((len(predicates), len(ks)))
        np.add.at(hits, inverse, hit_gc.astype(np.float64))
        for p, h, c in zip(predicates.tolist(), hits, counts, strict=True):  # few classes
            per_pred.setdefault(p, []).append(h / c)
    out: dict[str, float] = {}
    if not recall_gc:
        for k in ks:
            out[f"R@{k}"] = out[f"ngR@{k}"] = out[f"mR@{k}"] = float("nan")
        return out
    r_gc = np.mean(recall_gc, axis=0)
    r_ng = np.mean(recall_ng, axis=0)
    class_means = np.array([np.mean(v, axis=0) for v in per_pred.values()])  # (P, len(ks))
    if num_predicates is not None:
        if num_predicates < len(per_pred):
            raise ValueError(f"num_predicates: expected at least the {len(per_pred)} predicate "
                             f"classes found in the ground truth, got {num_predicates}")
        m_r = class_means.sum(axis=0) / num_predicates
    else:
        m_r = class_means.mean(axis=0)
    for j, k in enumerate(ks):
        out[f"R@{k}"] = float(r_gc[j])
        out[f"ngR@{k}"] = float(r_ng[j])
        out[f"mR@{k}"] = float(m_r[j])
    return out


def object_recall(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
                  iou_threshold: float = 0.5) -> float:
    """Fraction of ground-truth objects matched by a predicted object of the same class.

    A ground-truth object counts as found when any predicted object has its label and IoU ≥
    ``iou_threshold`` ("+1 pixel" IoU); counts are pooled over all images. NaN when there are
    no ground-truth objects.

    Shapes:
        gts[i], preds[i]: boxes (M, 4), labels (M,) (``relations`` is not needed)
    """
    if len(gts) != len(preds):
        raise ValueError(f"gts and preds: expected one prediction per image, got {len(gts)} "
                         f"and {len(preds)}")
    found = total = 0
    for i, (g, p) in enumerate(zip(gts, preds, strict=True)):
        gt = _as_image(dict(g, relations=g.get("relations", np.zeros((0, 3)))), f"gts[{i}]",
                       with_scores=False)
        pr = _as_image(dict(p, relations=p.get("relations", np.zeros((0, 3)))), f"preds[{i}]",
                       with_scores=False)
        total += len(gt["labels"])
        if len(gt["labels"]) == 0 or len(pr["labels"]) == 0:
            continue
        ok = (box_iou(gt["boxes"], pr["boxes"]) >= iou_threshold) & (
            gt["labels"][:, None] == pr["labels"][None, :])
        found += int(ok.any(axis=1).sum())
    return float(found / total) if total else float("nan")
