"""Scene-graph metrics with Scene-Graph-Benchmark's definitions: R@K, ngR@K, mR@K, ng-mR@K,
zR@K, ng-zR@K and per-predicate recall (docs/design.md §6).

The definitions are those of neural-motifs and Scene-Graph-Benchmark (SGB, ``sgg_eval.py``;
SGGen / "SGDet"): a ground-truth triplet ``(subject, predicate, object)`` is hit when one of the
K best-ranked predicted triplets has the same subject, object and predicate labels and overlaps
the ground-truth subject and object boxes with IoU ≥ 0.5 each (IoU with the "+1 pixel" box
convention of those code bases). One prediction may hit several ground-truth triplets. Recall
is computed per image and averaged over the images with at least one ground-truth relation.

* ``R@K`` (graph constraint, SGB's ``SGRecall``): for each ordered pair of predicted instances
  only the best-scoring predicate is kept before ranking.
* ``ngR@K`` (no graph constraint, ``SGNoGraphConstraintRecall``): every predicted triplet is
  ranked, so one pair may contribute several predicates.
* ``mR@K`` (``SGMeanRecall``): recall per predicate class (with the graph constraint) in each
  image whose ground truth contains that predicate, averaged over those images, then averaged
  over the predicate classes. SGB divides by the vocabulary size (all predicates but the
  background), a predicate that never occurs in the ground truth counting 0: pass
  ``num_predicates`` for that. Without it the average is over the predicates that occur.
* ``ng-mR@K`` (``SGNGMeanRecall``): the same from the unconstrained ranking.
* ``zR@K`` / ``ng-zR@K`` (``SGZeroShotRecall`` / ``SGNGZeroShotRecall``): the zero-shot
  ground-truth triplets of an image are those whose (subject class, predicate, object class)
  never occurs in the training split (``train_triplets``); recall over them, with / without the
  graph constraint, per image, averaged over the images that have at least one.
* :func:`per_predicate_recall` gives the per-predicate terms of mR / ng-mR as a JSON-ready
  list, :func:`predicate_recall_table` as a text table.

Example:
    >>> gt = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 2],
    ...       "relations": [[0, 1, 3]]}
    >>> pred = dict(gt, relation_scores=[0.9])
    >>> evaluate([gt], [pred])["R@20"]
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "apply_graph_constraint",
    "box_iou",
    "evaluate",
    "object_recall",
    "per_predicate_recall",
    "predicate_recall_table",
    "triplet_matches",
]


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


def _zero_shot_set(train_triplets: Iterable[Sequence[int]] | np.ndarray
                   ) -> set[tuple[int, int, int]]:
    """Training triplets (subject class, predicate, object class) as a set of int tuples."""
    rows = train_triplets if isinstance(train_triplets, np.ndarray) else list(train_triplets)
    arr = np.asarray(rows, dtype=np.int64)
    if arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"train_triplets: expected rows (subject class, predicate, object "
                         f"class), got shape {arr.shape}")
    return set(map(tuple, arr.tolist()))


@dataclass
class _Recalls:
    """Per-image recalls gathered over a dataset (each entry: one value per K)."""

    ks: list[int]
    gc: list[np.ndarray] = field(default_factory=list)            # images with GT relations
    ng: list[np.ndarray] = field(default_factory=list)
    pred_gc: dict[int, list[np.ndarray]] = field(default_factory=dict)  # images with predicate
    pred_ng: dict[int, list[np.ndarray]] = field(default_factory=dict)
    pred_count: dict[int, int] = field(default_factory=dict)      # GT triplets per predicate
    zs_gc: list[np.ndarray] = field(default_factory=list)         # images with zero-shot GT
    zs_ng: list[np.ndarray] = field(default_factory=list)


def _collect(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
             ks: Sequence[int], iou_threshold: float,
             train_set: set[tuple[int, int, int]] | None) -> _Recalls:
    """Match every image once and keep what each metric averages."""
    if len(gts) != len(preds):
        raise ValueError(f"gts and preds: expected one prediction per image, got {len(gts)} "
                         f"ground-truth images and {len(preds)} predictions")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive integers, got {ks}")
    karr = np.asarray(ks, dtype=np.float64)
    out = _Recalls(ks=ks)
    for i, (g_raw, p_raw) in enumerate(zip(gts, preds, strict=True)):
        gt = _as_image(g_raw, f"gts[{i}]", with_scores=False)
        pred = _as_image(p_raw, f"preds[{i}]", with_scores=True)
        if len(gt["relations"]) == 0:
            continue
        ng_rel, _ = _rank(pred["relations"], pred["relation_scores"])
        gc_rel, _ = apply_graph_constraint(pred["relations"], pred["relation_scores"])
        first_ng = _first_hit(triplet_matches(gt, dict(pred, relations=ng_rel), iou_threshold))
        first_gc = _first_hit(triplet_matches(gt, dict(pred, relations=gc_rel), iou_threshold))
        hit_ng = (first_ng[:, None] < karr[None, :]).astype(np.float64)  # (G, len(ks))
        hit_gc = (first_gc[:, None] < karr[None, :]).astype(np.float64)
        out.ng.append(hit_ng.mean(axis=0))
        out.gc.append(hit_gc.mean(axis=0))
        rels = gt["relations"]
        predicates, inverse, counts = np.unique(rels[:, 2], return_inverse=True,
                                                return_counts=True)
        for hit, per in ((hit_gc, out.pred_gc), (hit_ng, out.pred_ng)):
            sums = np.zeros((len(predicates), len(ks)))
            np.add.at(sums, inverse, hit)
            for p, s, c in zip(predicates.tolist(), sums, counts, strict=True):  # few classes
                per.setdefault(p, []).append(s / c)
        for p, c in zip(predicates.tolist(), counts.tolist(), strict=True):
            out.pred_count[p] = out.pred_count.get(p, 0) + c
        if train_set is not None:
            labels = gt["labels"]
            zero = np.array([t not in train_set for t in zip(
                labels[rels[:, 0]].tolist(), rels[:, 2].tolist(), labels[rels[:, 1]].tolist(),
                strict=True)])
            if zero.any():
                out.zs_gc.append(hit_gc[zero].mean(axis=0))
                out.zs_ng.append(hit_ng[zero].mean(axis=0))
    return out


def _check_num_predicates(num_predicates: int | None, present: Iterable[int]) -> None:
    present = list(present)
    if num_predicates is None or not present:
        return
    if min(present) < 0 or max(present) >= num_predicates:
        bad = min(present) if min(present) < 0 else max(present)
        raise ValueError(f"num_predicates: expected every ground-truth predicate index in "
                         f"[0, {num_predicates}), got predicate {bad}")


def _mean_recall(per_pred: Mapping[int, list[np.ndarray]], num_predicates: int | None,
                 nk: int) -> np.ndarray:
    """Average over images per predicate, then over the predicates (SGB: all of them).

    Shapes:
        -> (nk,)
    """
    if not per_pred:
        return np.zeros(nk)
    class_means = np.array([np.mean(v, axis=0) for v in per_pred.values()])  # (P, nk)
    if num_predicates is not None:
        return class_means.sum(axis=0) / num_predicates  # absent predicates count 0
    return class_means.mean(axis=0)


def evaluate(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
             ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5,
             num_predicates: int | None = None, *,
             train_triplets: Iterable[Sequence[int]] | np.ndarray | None = None
             ) -> dict[str, float]:
    """Scene-graph R@K, ngR@K, mR@K, ng-mR@K and, with training triplets, zR@K and ng-zR@K.

    Args:
        gts: one dict per image: ``boxes`` xyxy, ``labels`` object classes, ``relations``
            rows (subject index, object index, predicate) into ``boxes``.
        preds: one dict per image, same keys plus ``relation_scores`` (the ranking score of
            each predicted triplet; higher is better).
        ks: the K values.
        iou_threshold: box IoU needed for subject and object (0.5).
        num_predicates: the predicate vocabulary size. When given, ``mR@K`` and ``ng-mR@K``
            average over all these predicate classes, those absent from the ground truth
            counting 0, as Scene-Graph-Benchmark does; by default they average over the
            predicates that occur in the ground truth (docs/design.md §6).
        train_triplets: the (subject class, predicate, object class) triplets of the training
            split, in the index space of ``labels`` and predicates. Ground-truth triplets not
            among them are zero-shot: ``zR@K`` and ``ng-zR@K`` are their recall. None: no
            zero-shot keys.

    Returns:
        ``{"R@K", "ngR@K", "mR@K", "ng-mR@K"[, "zR@K", "ng-zR@K"]}`` for every K, as fractions
        in [0, 1]; NaN when no image has a ground-truth relation (zR: a zero-shot one).

    Raises:
        ValueError: mismatched lists, malformed images (naming ``gts[i]`` / ``preds[i]`` and
            the key), bad ``ks``, a ground-truth predicate outside ``[0, num_predicates)``.

    Shapes:
        gts[i]: boxes (M, 4), labels (M,), relations (R, 3)
        preds[i]: boxes (P, 4), labels (P,), relations (Q, 3), relation_scores (Q,)
        train_triplets: (T, 3)
    """
    train_set = None if train_triplets is None else _zero_shot_set(train_triplets)
    rec = _collect(gts, preds, ks, iou_threshold, train_set)
    _check_num_predicates(num_predicates, rec.pred_gc)
    nk = len(rec.ks)
    nan = np.full(nk, np.nan)
    columns = {
        "R": np.mean(rec.gc, axis=0) if rec.gc else nan,
        "ngR": np.mean(rec.ng, axis=0) if rec.ng else nan,
        "mR": _mean_recall(rec.pred_gc, num_predicates, nk) if rec.gc else nan,
        "ng-mR": _mean_recall(rec.pred_ng, num_predicates, nk) if rec.gc else nan,
    }
    if train_set is not None:
        columns["zR"] = np.mean(rec.zs_gc, axis=0) if rec.zs_gc else nan
        columns["ng-zR"] = np.mean(rec.zs_ng, axis=0) if rec.zs_ng else nan
    return {f"{name}@{k}": float(values[j])
            for j, k in enumerate(rec.ks) for name, values in columns.items()}


def per_predicate_recall(gts: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]],
                         ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5,
                         num_predicates: int | None = None,
                         predicate_names: Sequence[str] | None = None
                         ) -> list[dict[str, Any]]:
    """Recall of each predicate class: the terms that ``mR@K`` and ``ng-mR@K`` average.

    Args:
        gts, preds, ks, iou_threshold: as :func:`evaluate`.
        num_predicates: list every predicate 0 … num_predicates − 1 (absent ones too); by
            default only the predicates that occur in the ground truth.
        predicate_names: name of each predicate index (optional).

    Returns:
        A JSON-ready list, one dict per predicate in index order: ``predicate`` (index),
        ``name`` (or None), ``relations`` (ground-truth triplets), ``images`` (images whose
        ground truth has it), and ``R@K`` / ``ngR@K`` (recall with / without the graph
        constraint, averaged over those images; None when ``images`` is 0, which ``mR@K``
        counts as 0).

    Raises:
        ValueError: as :func:`evaluate`; ``predicate_names`` shorter than the predicates.
    """
    rec = _collect(gts, preds, ks, iou_threshold, None)
    _check_num_predicates(num_predicates, rec.pred_gc)
    indices = list(range(num_predicates)) if num_predicates is not None \
        else sorted(rec.pred_gc)
    if predicate_names is not None and indices and len(predicate_names) <= indices[-1]:
        raise ValueError(f"predicate_names: expected at least {indices[-1] + 1} names, got "
                         f"{len(predicate_names)}")
    rows = []
    for p in indices:
        row: dict[str, Any] = {
            "predicate": p, "name": None if predicate_names is None else str(predicate_names[p]),
            "relations": rec.pred_count.get(p, 0), "images": len(rec.pred_gc.get(p, [])),
        }
        for name, per in (("R", rec.pred_gc), ("ngR", rec.pred_ng)):
            mean = np.mean(per[p], axis=0) if p in per else None
            for j, k in enumerate(rec.ks):
                row[f"{name}@{k}"] = None if mean is None else float(mean[j])
        rows.append(row)
    return rows


def predicate_recall_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`per_predicate_recall` rows as a text table, with the mean of each column.

    The mean row counts a predicate without ground truth as 0 (so over all ``num_predicates``
    rows it equals ``mR@K`` / ``ng-mR@K``); such a predicate shows ``-``.
    """
    if not rows:
        return "no predicate in the ground truth\n"
    recall_keys = [k for k in rows[0] if k.startswith(("R@", "ngR@"))]
    width = max([len("predicate")] + [len(str(r["name"] if r["name"] is not None
                                              else r["predicate"])) for r in rows])
    head = (f"{'predicate':<{width}} {'GT':>7} {'images':>7} "
            + " ".join(f"{k:>8}" for k in recall_keys))
    lines = [head, "-" * len(head)]
    for r in rows:
        label = str(r["name"] if r["name"] is not None else r["predicate"])
        cells = " ".join(f"{'-':>8}" if r[k] is None else f"{r[k]:8.4f}" for k in recall_keys)
        lines.append(f"{label:<{width}} {r['relations']:>7d} {r['images']:>7d} {cells}")
    means = " ".join(f"{np.mean([r[k] or 0.0 for r in rows]):8.4f}" for k in recall_keys)
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}} {sum(r['relations'] for r in rows):>7d} {'':>7} {means}")
    return "\n".join(lines) + "\n"


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
