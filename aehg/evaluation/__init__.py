"""Evaluation: COCO keypoint / bbox AP and scene-graph recall (DESIGN §6).

``evaluate_coco`` wraps ``pycocotools.cocoeval.COCOeval``; ``evaluate_scene_graph`` computes
R@K, ngR@K and mR@K. Evaluating a model end to end (decode, map back, score) is
:func:`aehg.inference.evaluate_model`.
"""

from __future__ import annotations

from aehg.evaluation.coco import boxes_to_results, keypoints_to_results, load_coco
from aehg.evaluation.coco import evaluate as evaluate_coco
from aehg.evaluation.scene_graph import evaluate as evaluate_scene_graph
from aehg.evaluation.scene_graph import object_recall

__all__ = [
    "boxes_to_results",
    "evaluate_coco",
    "evaluate_scene_graph",
    "keypoints_to_results",
    "load_coco",
    "object_recall",
]
