"""Scene-graph R@K / ngR@K / mR@K / ng-mR@K / zR@K / ng-zR@K and per-predicate recall against
hand-computed values and naive references written from the definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aehg.evaluation.scene_graph import (
    apply_graph_constraint,
    box_iou,
    evaluate,
    object_recall,
    per_predicate_recall,
    predicate_recall_table,
)


def _hand_case():
    """Three images; values below are worked out by hand in the comments.

    Image 0 — ground truth (3 relations):
        boxes: g0 person [0,0,9,9], g1 horse [20,0,29,9], g2 hat [40,0,49,9]
        relations: (g0, g1, riding=0), (g0, g2, wearing=1), (g1, g0, near=2)
      prediction:
        boxes: p0 = g0, p1 = g1, p2 = g2, p3 person [0,0,4,9]
        (p3 vs g0: "+1" IoU = 5·10 / 10·10 = 0.5 → counts; without +1 it would be 36/81)
        a (p0, p1, near)    0.90  wrong predicate
        b (p0, p1, riding)  0.85  hits (g0,g1,riding) but shares pair (p0,p1) with a
        c (p3, p2, wearing) 0.70  hits (g0,g2,wearing)
        d (p1, p0, near)    0.10  hits (g1,g0,near)
      no graph constraint, ranked a b c d: hits after K=1: 0, K=2: 1, K=4: 3 → 0, 1/3, 1
      graph constraint keeps a, c, d:      hits after K=1: 0, K=2: 1, K=4: 2 → 0, 1/3, 2/3
    Image 1 — ground truth (2 relations):
        boxes: g0 person [0,0,9,9], g1 shirt [10,10,19,19]
        relations: (g0, g1, wearing=1), (g1, g0, riding=0)
      prediction:
        boxes: p0 = g0, p1 = g1, p2 shirt [15,10,24,19] (IoU with g1 = 50/150 < 0.5)
        f (p2, p0, riding)  0.60  miss (box)
        e (p0, p1, wearing) 0.50  hits (g0,g1,wearing)
      both rankings f e: K=1: 0, K=2: 1/2, K=4: 1/2
    Image 2 — no ground-truth relation: ignored whatever is predicted.

    R@1 = 0, R@2 = (1/3 + 1/2)/2 = 5/12, R@4 = (2/3 + 1/2)/2 = 7/12
    ngR@1 = 0, ngR@2 = 5/12, ngR@4 = (1 + 1/2)/2 = 3/4
    mR (graph constraint), per predicate over the images containing it:
      riding:  image 0 (0,0,0), image 1 (0,0,0)     → 0, 0, 0
      wearing: image 0 (0,1,1), image 1 (0,1,1)     → 0, 1, 1
      near:    image 0 (0,0,1)                      → 0, 0, 1
      mR@1 = 0, mR@2 = 1/3, mR@4 = 2/3 (over the 3 predicates present; 2/5 over 5 classes)
    """
    person, horse, hat, shirt = 1, 2, 3, 4
    riding, wearing, near = 0, 1, 2
    gts = [
        {"boxes": [[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9]],
         "labels": [person, horse, hat],
         "relations": [[0, 1, riding], [0, 2, wearing], [1, 0, near]]},
        {"boxes": [[0, 0, 9, 9], [10, 10, 19, 19]], "labels": [person, shirt],
         "relations": [[0, 1, wearing], [1, 0, riding]]},
        {"boxes": [[0, 0, 9, 9]], "labels": [person], "relations": np.zeros((0, 3))},
    ]
    preds = [
        {"boxes": [[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9], [0, 0, 4, 9]],
         "labels": [person, horse, hat, person],
         "relations": [[0, 1, near], [0, 1, riding], [3, 2, wearing], [1, 0, near]],
         "relation_scores": [0.9, 0.85, 0.7, 0.1]},
        {"boxes": [[0, 0, 9, 9], [10, 10, 19, 19], [15, 10, 24, 19]],
         "labels": [person, shirt, shirt],
         "relations": [[2, 0, riding], [0, 1, wearing]], "relation_scores": [0.6, 0.5]},
        {"boxes": [[0, 0, 9, 9], [0, 0, 9, 9]], "labels": [person, person],
         "relations": [[0, 1, near]], "relation_scores": [0.3]},
    ]
    return gts, preds


def test_hand_made_case():
    gts, preds = _hand_case()
    out = evaluate(gts, preds, ks=(1, 2, 4))
    expected = {"R@1": 0.0, "R@2": 5 / 12, "R@4": 7 / 12,
                "ngR@1": 0.0, "ngR@2": 5 / 12, "ngR@4": 3 / 4,
                "mR@1": 0.0, "mR@2": 1 / 3, "mR@4": 2 / 3,
                # worked out in test_sgb_metrics_hand_made_case
                "ng-mR@1": 0.0, "ng-mR@2": 1 / 3, "ng-mR@4": 5 / 6}
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key
    out5 = evaluate(gts, preds, ks=(4,), num_predicates=5)
    assert out5["mR@4"] == pytest.approx(2 / 5)


def test_hand_made_case_default_ks():
    gts, preds = _hand_case()
    out = evaluate(gts, preds)
    # With K ≥ 4 everything predicted is in the top K.
    for k in (20, 50, 100):
        assert out[f"R@{k}"] == pytest.approx(7 / 12)
        assert out[f"ngR@{k}"] == pytest.approx(3 / 4)
        assert out[f"mR@{k}"] == pytest.approx(2 / 3)


def test_plus_one_iou_convention():
    assert box_iou([[0, 0, 9, 9]], [[0, 0, 4, 9]])[0, 0] == pytest.approx(0.5)
    assert box_iou([[0, 0, 9, 9]], [[20, 20, 29, 29]])[0, 0] == 0.0
    # A one-pixel box (x1 == x2) has area 1, not 0.
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0, 0] == 1.0


def test_box_iou_matches_naive_loop():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 50, (7, 2, 2)), axis=1).transpose(0, 2, 1).reshape(7, 4)
    b = np.sort(rng.uniform(0, 50, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)
    a, b = a[:, [0, 2, 1, 3]], b[:, [0, 2, 1, 3]]  # x1, y1, x2, y2
    ref = np.zeros((7, 5))
    for i in range(7):
        for j in range(5):
            iw = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]) + 1
            ih = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]) + 1
            inter = max(iw, 0) * max(ih, 0)
            aa = (a[i, 2] - a[i, 0] + 1) * (a[i, 3] - a[i, 1] + 1)
            bb = (b[j, 2] - b[j, 0] + 1) * (b[j, 3] - b[j, 1] + 1)
            ref[i, j] = inter / (aa + bb - inter)
    np.testing.assert_allclose(box_iou(a, b), ref, rtol=1e-12)


def _random_graph(rng, n_obj, n_rel, n_cls=3, n_pred=3, unique_pairs=True):
    xy = rng.uniform(0, 100, (n_obj, 2))
    wh = rng.uniform(5, 40, (n_obj, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    labels = rng.integers(0, n_cls, n_obj)
    pairs = np.array([(s, o) for s in range(n_obj) for o in range(n_obj) if s != o])
    if unique_pairs:
        pairs = pairs[rng.permutation(len(pairs))[:n_rel]]
    else:
        pairs = pairs[rng.integers(0, len(pairs), n_rel)]
    rels = np.concatenate([pairs, rng.integers(0, n_pred, (len(pairs), 1))], axis=1)
    return {"boxes": boxes, "labels": labels, "relations": rels}


def test_perfect_predictions_give_recall_one():
    rng = np.random.default_rng(1)
    gts = [_random_graph(rng, 6, 15) for _ in range(5)]
    preds = [dict(g, relation_scores=rng.uniform(size=len(g["relations"]))) for g in gts]
    out = evaluate(gts, preds)
    assert all(v == 1.0 for v in out.values()), out


def test_duplicate_pairs_only_hurt_graph_constrained_recall():
    # Two predicates on the same ordered pair: the graph constraint can keep only one.
    gt = {"boxes": [[0, 0, 9, 9], [20, 0, 29, 9]], "labels": [0, 1],
          "relations": [[0, 1, 0], [0, 1, 1]]}
    pred = dict(gt, relation_scores=[0.4, 0.6])
    out = evaluate([gt], [pred], ks=(20,))
    assert out["ngR@20"] == 1.0
    assert out["R@20"] == 0.5
    # mR: predicate 0 recall 0, predicate 1 recall 1.
    assert out["mR@20"] == 0.5


def _naive_recall(gt, pred, k, graph_constraint):
    """Scene-Graph-Benchmark's loop form: per predicted triplet, the GT triplets it hits."""
    rels = np.asarray(pred["relations"])
    scores = np.asarray(pred["relation_scores"], dtype=float)
    if graph_constraint:
        best = {}
        for i, (s, o, _) in enumerate(rels):
            if (s, o) not in best or scores[i] > scores[best[(s, o)]]:
                best[(s, o)] = i
        idx = sorted(best.values())
    else:
        idx = list(range(len(rels)))
    idx = sorted(idx, key=lambda i: -scores[i])[:k]
    hit = set()
    for i in idx:
        s, o, p = rels[i]
        for j, (gs, go, gp) in enumerate(np.asarray(gt["relations"])):
            if (gp == p and gt["labels"][gs] == pred["labels"][s]
                    and gt["labels"][go] == pred["labels"][o]
                    and box_iou(gt["boxes"][gs], pred["boxes"][s])[0, 0] >= 0.5
                    and box_iou(gt["boxes"][go], pred["boxes"][o])[0, 0] >= 0.5):
                hit.add(j)
    return len(hit) / len(gt["relations"])


def test_matches_naive_reference_on_random_graphs():
    rng = np.random.default_rng(2)
    gts, preds = [], []
    for _ in range(8):
        gt = _random_graph(rng, 5, 6, n_cls=2, n_pred=2)
        # Predictions: jittered GT boxes, some label noise, duplicate pairs, distinct scores.
        pr = _random_graph(rng, 5, 24, n_cls=2, n_pred=2, unique_pairs=False)
        pr["relations"] = np.concatenate([gt["relations"], pr["relations"]])
        pr["boxes"] = gt["boxes"] + rng.normal(0, 4, gt["boxes"].shape)
        pr["labels"] = np.where(rng.uniform(size=5) < 0.8, gt["labels"], 1 - gt["labels"])
        pr["relation_scores"] = rng.permutation(30) / 30.0
        gts.append(gt)
        preds.append(pr)
    ks = (3, 10, 30)
    out = evaluate(gts, preds, ks=ks)
    for k in ks:
        ref_gc = np.mean([_naive_recall(g, p, k, True) for g, p in zip(gts, preds, strict=True)])
        ref_ng = np.mean([_naive_recall(g, p, k, False) for g, p in zip(gts, preds, strict=True)])
        assert out[f"R@{k}"] == pytest.approx(ref_gc)
        assert out[f"ngR@{k}"] == pytest.approx(ref_ng)
    assert 0 < out["R@3"] < out["ngR@30"] < 1  # the random case is not degenerate


def test_graph_constraint_keeps_best_predicate_per_pair():
    rels = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 2], [0, 1, 2]])
    scores = np.array([0.2, 0.9, 0.5, 0.9])
    kept, kept_scores = apply_graph_constraint(rels, scores)
    # Ties keep the earliest triplet; output is sorted by score.
    np.testing.assert_array_equal(kept, [[0, 1, 1], [1, 0, 2]])
    np.testing.assert_array_equal(kept_scores, [0.9, 0.5])
    empty, empty_scores = apply_graph_constraint(np.zeros((0, 3)), np.zeros(0))
    assert empty.shape == (0, 3) and empty_scores.shape == (0,)


def test_empty_predictions_and_no_relations():
    gts, _ = _hand_case()
    empty = [{"boxes": np.zeros((0, 4)), "labels": [], "relations": np.zeros((0, 3)),
              "relation_scores": []} for _ in gts]
    out = evaluate(gts, empty, ks=(20,))
    assert out == {"R@20": 0.0, "ngR@20": 0.0, "mR@20": 0.0, "ng-mR@20": 0.0}
    out = evaluate(gts[2:], empty[2:], ks=(20,))
    assert all(np.isnan(v) for v in out.values())


def test_bad_input_errors_name_the_field():
    gts, preds = _hand_case()
    with pytest.raises(ValueError, match="one prediction per image"):
        evaluate(gts, preds[:2])
    bad = dict(preds[0], relation_scores=[0.1])
    with pytest.raises(ValueError, match=r"preds\[0\]: relation_scores"):
        evaluate(gts[:1], [bad])
    bad = dict(preds[0], relations=[[0, 7, 1]])
    bad["relation_scores"] = [0.1]
    with pytest.raises(ValueError, match=r"preds\[0\]: relations: subject/object indices"):
        evaluate(gts[:1], [bad])
    with pytest.raises(ValueError, match=r"gts\[0\]: missing key"):
        evaluate([{"boxes": []}], preds[:1])
    with pytest.raises(ValueError, match=r"gts\[0\]: boxes"):
        evaluate([dict(gts[0], boxes=[[0, 0, 1]] * 3)], preds[:1])


def test_object_recall():
    gts, preds = _hand_case()
    # Image 0: g0, g1, g2 found (p0, p1, p2). Image 1: g0 found, g1 found (p1).
    # Image 2: g0 found. 6 of 6.
    assert object_recall(gts, preds) == 1.0
    preds[1] = dict(preds[1], labels=[1, 3, 3])  # shirt mislabelled → g1 of image 1 lost
    assert object_recall(gts, preds) == pytest.approx(5 / 6)
    assert np.isnan(object_recall([], []))


# --------------------------------------------------------------------------- SGB's metrics

# The hand case's classes: person 1, horse 2, hat 3, shirt 4; predicates riding 0, wearing 1,
# near 2. Training saw (person, riding, horse) and (person, wearing, shirt) only.
TRAIN_TRIPLETS = [(1, 0, 2), (1, 1, 4)]


def test_sgb_metrics_hand_made_case():
    """ng-mR, zR and ng-zR on the three images of _hand_case, worked out by hand.

    First-hit ranks (0-based) of the ground-truth triplets; a triplet counts at K when rank < K:
      image 0, ranked a b c d (ng) / a c d (gc, b loses its pair to a):
        r0 (person, riding, horse)   ng 1 (b)   gc never
        r1 (person, wearing, hat)    ng 2 (c)   gc 1 (c)
        r2 (horse, near, person)     ng 3 (d)   gc 2 (d)
      image 1, ranked f e (both):
        r0 (person, wearing, shirt)  ng 1 (e)   gc 1 (e)
        r1 (shirt, riding, person)   never
    ng-mR, per predicate over the images containing it, K = 1, 2, 4:
      riding:  image 0 (0,1,1), image 1 (0,0,0) → (0, 1/2, 1/2)
      wearing: image 0 (0,0,1), image 1 (0,1,1) → (0, 1/2, 1)
      near:    image 0 (0,0,1)                  → (0, 0, 1)
      ng-mR = (0, 1/3, 5/6) over the 3 predicates present; over 5 classes ng-mR@4 = 2.5/5 = 1/2
      (mR = (0, 1/3, 2/3), from test_hand_made_case's docstring; 2/5 over 5 classes)
    Zero-shot ground truth: image 0 r1, r2 (r0 was seen); image 1 r1 (r0 was seen).
      zR:    image 0 gc hits among {r1, r2}: K=1 0, K=2 1/2 (r1), K=4 1; image 1: 0, 0, 0
             → (0, 1/4, 1/2)
      ng-zR: image 0 ng hits among {r1, r2}: K=1 0, K=2 0, K=4 1; image 1: 0, 0, 0
             → (0, 0, 1/2)
    At K = 4: mR 2/3, ng-mR 5/6, zR 1/2 all differ (R 7/12, ngR 3/4).
    """
    gts, preds = _hand_case()
    out = evaluate(gts, preds, ks=(1, 2, 4), train_triplets=TRAIN_TRIPLETS)
    expected = {"R@1": 0.0, "R@2": 5 / 12, "R@4": 7 / 12,
                "ngR@1": 0.0, "ngR@2": 5 / 12, "ngR@4": 3 / 4,
                "mR@1": 0.0, "mR@2": 1 / 3, "mR@4": 2 / 3,
                "ng-mR@1": 0.0, "ng-mR@2": 1 / 3, "ng-mR@4": 5 / 6,
                "zR@1": 0.0, "zR@2": 1 / 4, "zR@4": 1 / 2,
                "ng-zR@1": 0.0, "ng-zR@2": 0.0, "ng-zR@4": 1 / 2}
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key
    assert len({round(out[k], 9) for k in ("mR@4", "ng-mR@4", "zR@4")}) == 3
    # SGB's averaging: over all 5 predicate classes, the 2 absent ones counting 0.
    out5 = evaluate(gts, preds, ks=(4,), num_predicates=5, train_triplets=np.array(TRAIN_TRIPLETS))
    assert out5["mR@4"] == pytest.approx(2 / 5)
    assert out5["ng-mR@4"] == pytest.approx(1 / 2)
    assert out5["zR@4"] == pytest.approx(1 / 2)  # num_predicates changes only the means
    # Every ground-truth triplet seen in training: no zero-shot triplet, so NaN.
    seen = [(1, 0, 2), (1, 1, 3), (2, 2, 1), (1, 1, 4), (4, 0, 1)]
    out = evaluate(gts, preds, ks=(4,), train_triplets=seen)
    assert np.isnan(out["zR@4"]) and np.isnan(out["ng-zR@4"])
    # An empty training set makes every triplet zero-shot: zR = R, ng-zR = ngR.
    out = evaluate(gts, preds, ks=(1, 2, 4), train_triplets=[])
    for k in (1, 2, 4):
        assert out[f"zR@{k}"] == out[f"R@{k}"] and out[f"ng-zR@{k}"] == out[f"ngR@{k}"]


def test_per_predicate_recall_list_and_table():
    gts, preds = _hand_case()
    names = ["riding", "wearing", "near", "on"]
    rows = per_predicate_recall(gts, preds, ks=(2, 4), num_predicates=4, predicate_names=names)
    assert rows == [
        {"predicate": 0, "name": "riding", "relations": 2, "images": 2,
         "R@2": 0.0, "R@4": 0.0, "ngR@2": 0.5, "ngR@4": 0.5},
        {"predicate": 1, "name": "wearing", "relations": 2, "images": 2,
         "R@2": 1.0, "R@4": 1.0, "ngR@2": 0.5, "ngR@4": 1.0},
        {"predicate": 2, "name": "near", "relations": 1, "images": 1,
         "R@2": 0.0, "R@4": 1.0, "ngR@2": 0.0, "ngR@4": 1.0},
        {"predicate": 3, "name": "on", "relations": 0, "images": 0,
         "R@2": None, "R@4": None, "ngR@2": None, "ngR@4": None},
    ]
    assert json.loads(json.dumps(rows)) == rows
    # The table's mean row is mR / ng-mR over the 4 classes ("on" counts 0).
    assert predicate_recall_table(rows) == (
        "predicate      GT  images      R@2      R@4    ngR@2    ngR@4\n"
        "-------------------------------------------------------------\n"
        "riding          2       2   0.0000   0.0000   0.5000   0.5000\n"
        "wearing         2       2   1.0000   1.0000   0.5000   1.0000\n"
        "near            1       1   0.0000   1.0000   0.0000   1.0000\n"
        "on              0       0        -        -        -        -\n"
        "-------------------------------------------------------------\n"
        "mean            5           0.2500   0.5000   0.2500   0.6250\n")
    out = evaluate(gts, preds, ks=(2, 4), num_predicates=4)
    assert (out["mR@2"], out["mR@4"], out["ng-mR@2"], out["ng-mR@4"]) == (0.25, 0.5, 0.25, 0.625)
    # Without num_predicates: only the predicates present, no names.
    rows = per_predicate_recall(gts, preds, ks=(4,))
    assert [(r["predicate"], r["name"], r["R@4"]) for r in rows] == [
        (0, None, 0.0), (1, None, 1.0), (2, None, 1.0)]
    assert predicate_recall_table([]) == "no predicate in the ground truth\n"


def _naive_hit_set(gt, pred, k, graph_constraint):
    """Indices of the ground-truth triplets hit by the top-k predictions (loop form)."""
    rels = np.asarray(pred["relations"])
    scores = np.asarray(pred["relation_scores"], dtype=float)
    idx = list(range(len(rels)))
    if graph_constraint:
        best = {}
        for i in idx:
            pair = (rels[i][0], rels[i][1])
            if pair not in best or scores[i] > scores[best[pair]]:
                best[pair] = i
        idx = list(best.values())
    idx = sorted(idx, key=lambda i: -scores[i])[:k]
    hit = set()
    for j, (gs, go, gp) in enumerate(np.asarray(gt["relations"])):
        for i in idx:
            s, o, p = rels[i]
            if (gp == p and gt["labels"][gs] == pred["labels"][s]
                    and gt["labels"][go] == pred["labels"][o]
                    and box_iou(gt["boxes"][gs], pred["boxes"][s])[0, 0] >= 0.5
                    and box_iou(gt["boxes"][go], pred["boxes"][o])[0, 0] >= 0.5):
                hit.add(j)
    return hit


def _naive_sgb_metrics(gts, preds, k, num_predicates, train):
    """mR, ng-mR, zR, ng-zR straight from SGB's definitions."""
    per_class = {gc: {p: [] for p in range(num_predicates)} for gc in (True, False)}
    zero_shot = {True: [], False: []}
    for gt, pred in zip(gts, preds, strict=True):
        rels = np.asarray(gt["relations"])
        if len(rels) == 0:
            continue
        for gc in (True, False):
            hits = _naive_hit_set(gt, pred, k, gc)
            for p in range(num_predicates):
                mine = [j for j in range(len(rels)) if rels[j][2] == p]
                if mine:
                    per_class[gc][p].append(len(hits & set(mine)) / len(mine))
            zs = [j for j, (s, o, p) in enumerate(rels)
                  if (gt["labels"][s], p, gt["labels"][o]) not in train]
            if zs:
                zero_shot[gc].append(len(hits & set(zs)) / len(zs))

    def mean_recall(gc):
        return sum(np.mean(v) if v else 0.0 for v in per_class[gc].values()) / num_predicates
    return {"mR": mean_recall(True), "ng-mR": mean_recall(False),
            "zR": np.mean(zero_shot[True]), "ng-zR": np.mean(zero_shot[False])}


def test_sgb_metrics_match_naive_loops_on_random_graphs():
    rng = np.random.default_rng(3)
    n_cls, n_pred, num_predicates = 3, 4, 6  # predicates 4 and 5 never occur
    gts, preds = [], []
    for _ in range(10):
        gt = _random_graph(rng, 5, 7, n_cls=n_cls, n_pred=n_pred, unique_pairs=False)
        pr = _random_graph(rng, 5, 24, n_cls=n_cls, n_pred=n_pred, unique_pairs=False)
        pr["relations"] = np.concatenate([gt["relations"], pr["relations"]])
        pr["boxes"] = gt["boxes"] + rng.normal(0, 4, gt["boxes"].shape)
        pr["labels"] = np.where(rng.uniform(size=5) < 0.8, gt["labels"],
                                rng.integers(0, n_cls, 5))
        pr["relation_scores"] = rng.permutation(31)[:len(pr["relations"])] / 31.0
        gts.append(gt)
        preds.append(pr)
    all_triplets = [(s, p, o) for s in range(n_cls) for p in range(n_pred) for o in range(n_cls)]
    train = {all_triplets[i] for i in rng.permutation(len(all_triplets))[:18]}
    ks = (3, 8, 31)
    out = evaluate(gts, preds, ks=ks, num_predicates=num_predicates,
                   train_triplets=sorted(train))
    for k in ks:
        ref = _naive_sgb_metrics(gts, preds, k, num_predicates, train)
        for name, value in ref.items():
            assert out[f"{name}@{k}"] == pytest.approx(value), (name, k)
    # Not degenerate: the metrics differ from one another and from 0 and 1.
    assert 0 < out["zR@3"] < out["ng-zR@31"] < 1
    assert out["mR@8"] != out["ng-mR@8"] and out["mR@8"] != out["zR@8"]
    rows = per_predicate_recall(gts, preds, ks=ks, num_predicates=num_predicates)
    for k in ks:
        assert np.mean([r[f"R@{k}"] or 0.0 for r in rows]) == pytest.approx(out[f"mR@{k}"])
        assert np.mean([r[f"ngR@{k}"] or 0.0 for r in rows]) == pytest.approx(out[f"ng-mR@{k}"])
    assert [r["images"] for r in rows][4:] == [0, 0]


def test_sgb_metric_argument_errors():
    gts, preds = _hand_case()
    with pytest.raises(ValueError, match=r"num_predicates: expected every ground-truth predicate "
                                         r"index in \[0, 2\), got predicate 2"):
        evaluate(gts, preds, num_predicates=2)
    with pytest.raises(ValueError, match=r"train_triplets: expected rows \(subject class, "
                                         r"predicate, object class\), got shape \(2, 2\)"):
        evaluate(gts, preds, train_triplets=[(1, 0), (1, 1)])
    with pytest.raises(ValueError, match=r"predicate_names: expected at least 3 names, got 2"):
        per_predicate_recall(gts, preds, predicate_names=["riding", "wearing"])
