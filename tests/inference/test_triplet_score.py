"""``eval.triplet_score`` on a hand-made graph, and the per-class link heat that decoding keeps
for Scene-Graph-Benchmark's ``rel_all_scores``."""

from __future__ import annotations

import numpy as np
import pytest

from aehg.config import EvalConfig
from aehg.decoding import Instances, build_graph
from aehg.evaluation.scene_graph import evaluate
from aehg.inference import Prediction, decode_predictions
from aehg.models import StackOutput
from aehg.models.hourglass import InteractionMaps, ObjectMaps

H = W = 8
# Objects 0, 1, 2 (classes 0, 1, 2) with tags 0, 5, 10 and scores 0.8, 0.05, 0.8.
TAGS = [0.0, 5.0, 10.0]
SCORES = [0.8, 0.05, 0.8]
CENTRES = [(1, 1), (3, 3), (5, 1)]  # (x, y) in map pixels


def _link_maps():
    """Link class 0 peaks 0.9 at (x 2, y 2) pointing 0 → 1; class 1 peaks 0.2 at (x 5, y 6)
    pointing 0 → 2. The other class is 0.05 / 0.07 there (below the link threshold).

    Shapes:
        -> heat (2, H, W), src (1, H, W), dst (1, H, W)
    """
    heat = np.zeros((2, H, W), np.float32)
    src = np.full((1, H, W), 100.0, np.float32)
    dst = np.full((1, H, W), 100.0, np.float32)
    heat[:, 2, 2] = (0.9, 0.05)
    src[0, 2, 2], dst[0, 2, 2] = 0.0, 5.0
    heat[:, 6, 5] = (0.07, 0.2)
    src[0, 6, 5], dst[0, 6, 5] = 0.0, 10.0
    return heat, src, dst


def _instances():
    kp = np.zeros((3, 3, 3), np.float32)
    for i, (x, y) in enumerate(CENTRES):
        kp[i, i] = (x, y, SCORES[i])
    boxes = np.array([[x - 1, y - 1, x + 1, y + 1] for x, y in CENTRES], np.float32)
    return Instances(kp, np.array(SCORES), np.array(TAGS)[:, None], np.arange(3), boxes)


def test_both_triplet_scores_on_a_hand_made_graph():
    """aehg = heat·sqrt(s·o): 0.9·sqrt(0.8·0.05) = 0.18 and 0.2·sqrt(0.8·0.8) = 0.16;
    sgb = heat·s·o: 0.9·0.8·0.05 = 0.036 and 0.2·0.8·0.8 = 0.128. The order flips."""
    inst = _instances()
    graph = build_graph(inst, *_link_maps())
    pred = Prediction(inst, graph, (H, W))
    aehg = pred.scene_graph()
    assert aehg["relations"].tolist() == [[0, 1, 0], [0, 2, 1]]
    assert aehg["relation_scores"] == pytest.approx([0.18, 0.16], rel=1e-6)
    assert pred.scene_graph("aehg")["relation_scores"].tolist() == \
        [d["score"] for *_, d in graph.edges(data=True)]  # build_graph's own edge score
    sgb = pred.scene_graph("sgb")
    assert sgb["relations"].tolist() == [[0, 1, 0], [0, 2, 1]]
    assert sgb["relation_scores"] == pytest.approx([0.036, 0.128], rel=1e-6)
    # Ranking: the ground truth is 0 -1-> 2 only; at K = 1 only sgb ranks it first.
    gt = {"boxes": aehg["boxes"], "labels": aehg["labels"], "relations": [[0, 2, 1]]}
    assert evaluate([gt], [aehg], ks=[1])["ngR@1"] == 0.0
    assert evaluate([gt], [sgb], ks=[1])["ngR@1"] == 1.0


def test_sgb_score_clamps_negative_object_scores_and_names_missing_keys():
    inst = _instances()
    graph = build_graph(inst, *_link_maps())
    graph.nodes[1]["score"] = -0.5  # a negative score ranks like 0, never above
    pred = Prediction(inst, graph, (H, W))
    assert pred.scene_graph("sgb")["relation_scores"] == pytest.approx([0.0, 0.128], rel=1e-6)
    del graph.edges[0, 2, 1]["heat"]
    with pytest.raises(ValueError, match=r"^edge 0->2: missing 'heat', which the 'sgb' triplet "
                       r"score needs \(build_graph sets it\)$"):
        pred.scene_graph("sgb")
    with pytest.raises(ValueError, match=r"^triplet_score: expected 'aehg' or 'sgb', got "
                       r"'mean'$"):
        pred.scene_graph("mean")


def _maps(with_links=True):
    heat = np.zeros((1, 3, H, W), np.float32)
    tags = np.full((1, 1, 1, H, W), 50.0, np.float32)
    for i, (x, y) in enumerate(CENTRES):
        heat[0, i, y, x] = SCORES[i]
        tags[0, 0, 0, y, x] = TAGS[i]
    objects = ObjectMaps(heat, tags, None)
    if not with_links:
        return StackOutput(objects)
    link, src, dst = _link_maps()
    return StackOutput(objects, InteractionMaps(link[None], src[None], dst[None]))


def test_decoding_keeps_the_link_heat_of_every_class_at_each_link_pixel():
    metas = [{"transform": np.array([[2.0, 0, 0], [0, 2.0, 0]]), "orig_size": (4, 4)}]
    cfg = EvalConfig(detection_threshold=0.01)
    (pred,) = decode_predictions(_maps(), metas, cfg, "relations")
    edges = {(u, v, k): (d["x"], d["y"]) for u, v, k, d in pred.graph.edges(keys=True, data=True)}
    # Nodes are re-ordered by score (0.8, 0.8, 0.05): objects 0, 2, 1 become nodes 0, 1, 2.
    assert set(pred.link_class_heat) == set(edges) == {(0, 2, 0), (0, 1, 1)}
    assert pred.link_class_heat[(0, 2, 0)].tolist() == [np.float32(0.9), np.float32(0.05)]
    assert pred.link_class_heat[(0, 1, 1)].tolist() == [np.float32(0.07), np.float32(0.2)]
    assert edges[(0, 2, 0)] == (1.0, 1.0)  # mapped to image pixels after the read (x / 2)
    (no_links,) = decode_predictions(_maps(with_links=False), metas, cfg, "relations")
    assert no_links.link_class_heat is None
