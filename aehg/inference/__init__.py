"""Inference: pictures in, predictions in original-image pixels out (docs/design.md §8).

Pipeline: pictures (:mod:`~aehg.inference.io`) → validation transform
(:mod:`~aehg.inference.preprocess`) → model with the test-time options: flip test,
multi-scale, early exit (:mod:`~aehg.inference.maps`) → decoding into :class:`Prediction` s:
people or objects plus a ``networkx.MultiDiGraph`` (:mod:`~aehg.inference.decode`).
:class:`Predictor` (:mod:`~aehg.inference.predictor`) wraps it for a trained checkpoint,
:func:`predict_dataset` runs it over a validation set, and :func:`run_inference` (pictures) and
:func:`run_video` (a video or a webcam) are the jobs behind ``tools/infer.py``. Scoring
predictions is :mod:`aehg.evaluation`.

Example:
    >>> predictor = Predictor(None, "outputs/run/best.pt", flip=True)   # config from checkpoint
    >>> pred = predictor.predict("photo.jpg")
    >>> pred.keypoints.shape, pred.scores.shape, pred.graph.number_of_edges()
"""

from __future__ import annotations

from aehg.data.info import DataInfo, data_info, resolve_flip_map
from aehg.inference.dataset import predict_dataset
from aehg.inference.decode import (
    Prediction,
    decode_predictions,
    fit_pose_prior,
    resolve_pose_prior,
)
from aehg.inference.io import IMAGE_SUFFIXES, ImageReadError, list_images, read_image
from aehg.inference.maps import (
    flip_back,
    forward_maps,
    infer_maps,
    maps_to_cpu,
    merge_flip,
    project_maps,
)
from aehg.inference.predictor import Predictor, config_from_checkpoint, resolve_device
from aehg.inference.preprocess import input_size_for_scale, preprocess
from aehg.inference.run import draw_prediction, run_inference
from aehg.inference.video import (
    VIDEO_SUFFIXES,
    VideoReadError,
    VideoSummary,
    camera_index,
    check_video,
    input_kind,
    run_video,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "DataInfo",
    "ImageReadError",
    "Prediction",
    "Predictor",
    "VideoReadError",
    "VideoSummary",
    "camera_index",
    "check_video",
    "config_from_checkpoint",
    "data_info",
    "decode_predictions",
    "draw_prediction",
    "fit_pose_prior",
    "flip_back",
    "forward_maps",
    "infer_maps",
    "input_kind",
    "input_size_for_scale",
    "list_images",
    "maps_to_cpu",
    "merge_flip",
    "predict_dataset",
    "preprocess",
    "project_maps",
    "read_image",
    "resolve_device",
    "resolve_flip_map",
    "resolve_pose_prior",
    "run_inference",
    "run_video",
]
