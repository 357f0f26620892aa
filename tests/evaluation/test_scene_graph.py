"""Scene-graph Recall@K / ngR@K / mR@K against hand-computed values and a naive reference."""

from __future__ import annotations

import numpy as np
import pytest

from aehg.evaluation.scene_graph import (
    apply_graph_constraint,
    box_iou,
    evaluate,
    object_recall,
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
                "mR@1": 0.0, "mR@2": 1 / 3, "mR@4": 2 / 3}
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
    assert out == {"R@20": 0.0, "ngR@20": 0.0, "mR@20": 0.0}
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
