"""Drawing predictions with OpenCV: skeletons per person, labelled boxes, relation graphs.

Images are ``uint8`` BGR arrays ``(H, W, 3)`` as read by ``cv2.imread``; every function draws on
a copy and returns it.

Example:
    >>> canvas = draw_people(image, keypoints, scores)          # keypoints (N, C, 3)
    >>> canvas = draw_graph(canvas, graph, class_names, predicate_names)
    >>> save_image("out/000001.png", canvas)
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import networkx as nx
import numpy as np

from aehg.io import atomic_write
from aehg.keypoints import COCO_SKELETON

__all__ = [
    "color_for",
    "draw_boxes",
    "draw_graph",
    "draw_people",
    "save_image",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(index: int) -> tuple[int, int, int]:
    """A distinct saturated BGR colour for ``index`` (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected a uint8 BGR array of shape (H, W, 3), got "
                         f"{image.dtype} {image.shape}")
    return np.ascontiguousarray(image).copy()


def _scale(image: np.ndarray) -> float:
    """Line/text scale that stays readable from thumbnails to large photos."""
    return max(image.shape[:2]) / 640.0


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def _label(image: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int],
           scale: float) -> None:
    """Text on a filled background so it reads on any picture."""
    fs = 0.45 * max(scale, 0.5)
    th = max(1, int(round(scale)))
    (w, h), base = cv2.getTextSize(text, _FONT, fs, th)
    x, y = org
    y = max(y, h + base)
    cv2.rectangle(image, (x, y - h - base), (x + w, y), color, -1)
    lum = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    cv2.putText(image, text, (x, y - base), _FONT, fs, (0, 0, 0) if lum > 140 else
                (255, 255, 255), th, cv2.LINE_AA)


def draw_people(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None,
                skeleton: Sequence[tuple[int, int]] | None = None,
                score_threshold: float = 0.1, show_scores: bool = False) -> np.ndarray:
    """Draw each person's parts and skeleton in its own colour.

    Args:
        image: BGR uint8 picture.
        keypoints: x, y, score per part in image pixels; parts scoring ≤ ``score_threshold``
            are not drawn.
        scores: per-person score, printed beside the person when ``show_scores``.
        skeleton: 0-based part pairs to join; None: COCO's for 17 parts, else none.
        score_threshold: minimum part score to draw.
        show_scores: write the person score next to its first visible part.

    Shapes:
        image: (H, W, 3), keypoints: (N, C, 3), scores: (N,)
    """
    canvas = _check_image(image)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.size == 0:
        return canvas
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f"keypoints: expected shape (N, C, 3), got {kp.shape}")
    n, c, _ = kp.shape
    if skeleton is None:
        skeleton = COCO_SKELETON if c == 17 else ()
    pairs = np.asarray(skeleton, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= c):
        raise ValueError(f"skeleton: part indices must lie in [0, {c}), got {pairs.tolist()}")
    s = _scale(canvas)
    thick = max(1, int(round(2 * s)))
    radius = max(2, int(round(3 * s)))
    visible = kp[..., 2] > score_threshold
    for i in range(n):  # a few people per picture; OpenCV draws one primitive per call
        color = color_for(i)
        for a, b in pairs[visible[i, pairs[:, 0]] & visible[i, pairs[:, 1]]]:
            cv2.line(canvas, _pt(kp[i, a]), _pt(kp[i, b]), color, thick, cv2.LINE_AA)
        for p in kp[i, visible[i]]:
            cv2.circle(canvas, _pt(p), radius, color, -1, cv2.LINE_AA)
        if show_scores and scores is not None and visible[i].any():
            first = kp[i, visible[i]][0]
            _label(canvas, f"{float(np.asarray(scores)[i]):.2f}", _pt(first), color, s)
    return canvas


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray | None = None,
               scores: np.ndarray | None = None, class_names: Sequence[str] | None = None,
               colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Draw boxes with "name score" captions.

    Args:
        image: BGR uint8 picture.
        boxes: x1, y1, x2, y2 in image pixels.
        labels: class indices (coloured per class unless ``colors`` is given).
        scores: detection scores.
        class_names: names indexed by label (else the label number is written).
        colors: one BGR colour per box.

    Shapes:
        image: (H, W, 3), boxes: (N, 4), labels: (N,), scores: (N,)
    """
    canvas = _check_image(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = _scale(canvas)
    thick = max(1, int(round(2 * s)))
    for i, box in enumerate(boxes):
        lab = None if labels is None else int(np.asarray(labels)[i])
        color = colors[i] if colors is not None else color_for(lab if lab is not None else i)
        cv2.rectangle(canvas, _pt(box[:2]), _pt(box[2:]), color, thick, cv2.LINE_AA)
        parts = []
        if lab is not None:
            parts.append(class_names[lab] if class_names is not None and 0 <= lab < len(
                class_names) else str(lab))
        if scores is not None:
            parts.append(f"{float(np.asarray(scores)[i]):.2f}")
        if parts:
            _label(canvas, " ".join(parts), _pt(box[:2]), color, s)
    return canvas


def _node_centre(data: dict, score_threshold: float) -> np.ndarray | None:
    if data.get("box") is not None:
        b = np.asarray(data["box"], dtype=np.float64).reshape(4)
        return (b[:2] + b[2:]) / 2
    if data.get("keypoints") is not None:
        kp = np.asarray(data["keypoints"], dtype=np.float64).reshape(-1, 3)
        vis = kp[:, 2] > score_threshold
        return kp[vis, :2].mean(axis=0) if vis.any() else None
    if data.get("x") is not None and data.get("y") is not None:
        return np.array([float(data["x"]), float(data["y"])])
    return None


def draw_graph(image: np.ndarray, graph: nx.Graph, class_names: Sequence[str] | None = None,
               predicate_names: Sequence[str] | None = None,
               skeleton: Sequence[tuple[int, int]] | None = None,
               score_threshold: float = 0.1) -> np.ndarray:
    """Draw a relation graph: nodes as boxes and/or skeletons, edges as labelled arrows.

    Nodes use their ``box`` (x1, y1, x2, y2) or ``keypoints`` (C, 3) attribute (else a dot at
    ``x``, ``y``), ``label`` and ``score``; each edge is an arrow from the subject's centre to
    the object's centre with the predicate name (edge ``label`` through ``predicate_names``) at
    its middle. Coordinates are image pixels.
    """
    canvas = _check_image(image)
    nodes = list(graph.nodes(data=True))
    with_box = [(n, d) for n, d in nodes if d.get("box") is not None]
    if with_box:
        canvas = draw_boxes(canvas, np.array([d["box"] for _, d in with_box]),
                            np.array([int(d.get("label", 0)) for _, d in with_box]),
                            np.array([float(d.get("score", 0.0)) for _, d in with_box]),
                            class_names)
    with_kp = [d for _, d in nodes if d.get("keypoints") is not None and d.get("box") is None]
    if with_kp:
        canvas = draw_people(canvas, np.stack([np.asarray(d["keypoints"]) for d in with_kp]),
                             skeleton=skeleton, score_threshold=score_threshold)
    centres = {n: _node_centre(d, score_threshold) for n, d in nodes}
    s = _scale(canvas)
    thick = max(1, int(round(2 * s)))
    for n, d in nodes:  # objects without a box: a dot and the class name at the centre
        if d.get("box") is not None or d.get("keypoints") is not None or centres[n] is None:
            continue
        lab = int(d.get("label", 0))
        cv2.circle(canvas, _pt(centres[n]), max(2, int(round(4 * s))), color_for(lab), -1,
                   cv2.LINE_AA)
        name = class_names[lab] if class_names is not None and 0 <= lab < len(
            class_names) else str(lab)
        _label(canvas, name, _pt(centres[n]), color_for(lab), s)
    edges = graph.edges(data=True)
    for u, v, d in edges:  # a few dozen edges per picture
        a, b = centres.get(u), centres.get(v)
        if a is None or b is None:
            continue
        lab = d.get("label")
        color = color_for(1000 + int(lab)) if lab is not None else (255, 255, 255)
        cv2.arrowedLine(canvas, _pt(a), _pt(b), color, thick, cv2.LINE_AA, tipLength=0.08)
        if lab is not None:
            name = predicate_names[int(lab)] if predicate_names is not None and 0 <= int(
                lab) < len(predicate_names) else str(int(lab))
            _label(canvas, name, _pt((a + b) / 2), color, s)
    return canvas


def save_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> Path:
    """Write a BGR picture as PNG or JPEG (by extension), atomically.

    Raises:
        ValueError: the extension is not .png, .jpg or .jpeg, or encoding fails.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"{path}: expected a .png, .jpg or .jpeg file name")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext != ".png" else []
    ok, buf = cv2.imencode(ext, _check_image(image), params)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the image")
    return atomic_write(path, lambda f: f.write(buf.tobytes()))
