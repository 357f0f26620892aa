"""Evaluation: COCO keypoint / bbox AP, scene-graph recall and MPII PCKh (docs/design.md §6).

``evaluate_coco`` wraps ``pycocotools.cocoeval.COCOeval``; ``evaluate_scene_graph`` computes
R@K, ngR@K, mR@K, ng-mR@K and (given the training triplets) zR@K and ng-zR@K with
Scene-Graph-Benchmark's definitions; ``per_predicate_recall`` / ``predicate_recall_table`` give
the per-predicate recall. Evaluating a model end to end (predict, map back, score) is
:func:`evaluate_model` (periodic validation) and :func:`evaluate_checkpoint` (``tools/eval.py``),
in :mod:`aehg.evaluation.model`.
"""

from __future__ import annotations

from aehg.evaluation.coco import boxes_to_results, keypoints_to_results, load_coco
from aehg.evaluation.coco import evaluate as evaluate_coco
from aehg.evaluation.model import (
    coco_results,
    evaluate_checkpoint,
    evaluate_model,
    score_predictions,
    with_training_prior,
)
from aehg.evaluation.oracle import oracle_maps, oracle_scores
from aehg.evaluation.pckh import pckh, pckh_table, score_single_pose
from aehg.evaluation.scene_graph import evaluate as evaluate_scene_graph
from aehg.evaluation.scene_graph import (
    object_recall,
    per_predicate_recall,
    predicate_recall_table,
)

__all__ = [
    "boxes_to_results",
    "coco_results",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_coco",
    "evaluate_scene_graph",
    "keypoints_to_results",
    "load_coco",
    "object_recall",
    "oracle_maps",
    "oracle_scores",
    "pckh",
    "pckh_table",
    "per_predicate_recall",
    "predicate_recall_table",
    "score_predictions",
    "score_single_pose",
    "with_training_prior",
]
