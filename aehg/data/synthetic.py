"""Synthetic datasets written as real files: PNG images plus COCO-format JSON (or, for
single-person pose, the hourglass code's MPII h5).

Three kinds, all deterministic by seed (image ``i`` of a split depends only on the seed, the split
and ``i``) and drawn with plain OpenCV primitives so that 1,000 images take a few seconds:

* ``pose``: 1–``max_people`` stick figures per image with J ∈ {7, 9, 11, 13, 15} parts (head, neck,
  pelvis, hands, feet, then elbows, knees, shoulders, hips), random size, pose, colour, overlap
  and occluding rectangles; keypoint visibility follows COCO (2 visible, 1 occluded, 0 outside).
  Parts look alike on both sides (hands white, feet yellow); which one is *left* is given by the
  side of the body it is on (left parts on the image right, as for a person facing the camera),
  so a horizontal flip with the left/right flip map stays consistent with the pixels. The
  category carries its own ``"oks_sigmas"`` and ``"flip_map"``.
* ``graph``: 2–``max_objects`` non-overlapping objects whose class is a (shape, colour) pair,
  with arrows from source to destination object whose colour is the link class, written in the
  relation format of docs/design.md §5 (``predicate_categories``, ``relationships``). The graph
  is fully determined by the pixels. Options (off by default) add collisions: objects of two
  classes sharing a centre, reverse relations and several predicates for one pair
  (:func:`draw_graph_image`).
* ``single``: one centred stick figure per image with the 16 MPII joints, no occluder, written
  as ``annotations/{train,val}.h5`` in the hourglass code's layout (:func:`draw_single_image`;
  read by :class:`aehg.data.mpii.MpiiDataset`; needs h5py).

Layout under ``root``: ``images/{train,val}/NNNNNN.png``, ``annotations/{train,val}.json``,
``spec.json`` (the generator spec; :func:`ensure_synthetic` regenerates only when it differs) and
the marker ``.aehg-synthetic``. Generation writes only into a new or empty folder or one with the
marker (or an aehg ``spec.json``): it never replaces a user's files.

Example:
    >>> paths = ensure_synthetic(SyntheticConfig(kind="pose", num_train=100), "data/synth_pose")
    >>> paths.train_json
    PosixPath('data/synth_pose/annotations/train.json')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aehg.config import SyntheticConfig
from aehg.io import write_json, write_text

__all__ = [
    "GENERATOR_VERSION",
    "GRAPH_LINK_COLORS",
    "GRAPH_OBJECT_CLASSES",
    "GRAPH_OBJECT_COLORS",
    "MARKER_NAME",
    "POSE_PART_NAMES",
    "SyntheticFolderError",
    "SyntheticPaths",
    "check_synthetic_root",
    "draw_graph_image",
    "draw_pose_image",
    "draw_single_image",
    "ensure_synthetic",
    "generate_split",
    "graph_categories",
    "pose_category",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1

# Parts in the order they are added: the first 7 always, then left/right pairs.
POSE_PART_NAMES = (
    "head", "neck", "pelvis", "left_hand", "right_hand", "left_foot", "right_foot",
    "left_elbow", "right_elbow", "left_knee", "right_knee",
    "left_shoulder", "right_shoulder", "left_hip", "right_hip",
)
_POSE_SIGMAS = {
    "head": 0.08, "neck": 0.08, "pelvis": 0.10, "hand": 0.06, "foot": 0.07, "elbow": 0.07,
    "knee": 0.08, "shoulder": 0.08, "hip": 0.10,
}
# Bones between full-skeleton parts; missing joints are bridged to their nearest ancestor.
_POSE_PARENT = {
    "neck": "pelvis", "head": "neck",
    "left_shoulder": "neck", "right_shoulder": "neck",
    "left_elbow": "left_shoulder", "right_elbow": "right_shoulder",
    "left_hand": "left_elbow", "right_hand": "right_elbow",
    "left_hip": "pelvis", "right_hip": "pelvis",
    "left_knee": "left_hip", "right_knee": "right_hip",
    "left_foot": "left_knee", "right_foot": "right_knee",
}
# BGR colours. Hands and feet have fixed colours not used by any body or occluder.
_HAND_BGR = (255, 255, 255)
_FOOT_BGR = (0, 230, 255)
_BODY_BGR = (
    (50, 50, 220), (60, 190, 40), (230, 100, 40), (200, 60, 200), (30, 130, 240),
    (190, 190, 30), (220, 70, 140), (60, 140, 120),
)

# Graph kind: class k is a (shape, colour) pair; link class r an arrow colour (BGR).
_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "hexagon")
_OBJECT_COLORS = {
    "red": (50, 50, 230), "green": (60, 200, 60), "blue": (240, 110, 50), "orange": (30, 150, 250),
}
GRAPH_OBJECT_COLORS = _OBJECT_COLORS  # colour name -> BGR
GRAPH_OBJECT_CLASSES = tuple(
    (_SHAPES[k % len(_SHAPES)], list(_OBJECT_COLORS)[k % len(_OBJECT_COLORS)]) for k in range(12))
GRAPH_LINK_COLORS = {
    "white": (255, 255, 255), "yellow": (0, 255, 255), "magenta": (255, 0, 255),
    "cyan": (255, 255, 0), "pink": (180, 130, 255), "lime": (120, 255, 170),
}
_SPLIT_CODE = {"train": 0, "val": 1}

# The file that marks a folder as aehg's synthetic data (so regenerating may replace its files).
MARKER_NAME = ".aehg-synthetic"
_MARKER_TEXT = ("Synthetic data generated by aehg.data.synthetic. Its images and annotations are "
                "replaced when the generator spec changes.\n")
_IMAGE_NAME = re.compile(r"\d{6}\.png")


class SyntheticFolderError(FileExistsError):
    """The folder given for synthetic data holds files aehg did not write (nothing is changed)."""


# --------------------------------------------------------------------------- categories


def pose_category(num_parts: int) -> dict:
    """The COCO category of the synthetic stick figures, with ``oks_sigmas`` and ``flip_map``."""
    if num_parts not in (7, 9, 11, 13, 15):
        raise ValueError(f"num_parts: expected one of 7, 9, 11, 13, 15, got {num_parts}")
    names = list(POSE_PART_NAMES[:num_parts])
    index = {n: i for i, n in enumerate(names)}
    skeleton = []
    for name in names:
        parent = _POSE_PARENT.get(name)
        while parent is not None and parent not in index:
            parent = _POSE_PARENT.get(parent)
        if parent is not None:
            skeleton.append([index[parent] + 1, index[name] + 1])  # COCO: 1-based
    flip = [index.get(n.replace("left_", "right_") if n.startswith("left_")
                      else n.replace("right_", "left_"), i) for i, n in enumerate(names)]
    sigmas = [_POSE_SIGMAS[n.split("_")[-1]] for n in names]
    return {"id": 1, "name": "person", "supercategory": "person", "keypoints": names,
            "skeleton": skeleton, "oks_sigmas": sigmas, "flip_map": flip}


def graph_categories(num_classes: int, num_link_classes: int) -> tuple[list[dict], list[dict]]:
    """The object categories and predicate categories of the synthetic graph data."""
    cats = [{"id": k + 1, "name": f"{color}_{shape}", "supercategory": "shape"}
            for k, (shape, color) in enumerate(GRAPH_OBJECT_CLASSES[:num_classes])]
    preds = [{"id": r + 1, "name": f"{name}_arrow"}
             for r, name in enumerate(list(GRAPH_LINK_COLORS)[:num_link_classes])]
    return cats, preds


# --------------------------------------------------------------------------- pose drawing


def _rot(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _unit(deg: np.ndarray | float) -> np.ndarray:
    a = np.radians(deg)
    return np.stack([np.cos(a), np.sin(a)], axis=-1)


def _figure_joints(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All 15 joints of one figure in its own frame (height ~1, y down, left parts at +x)."""
    j: dict[str, np.ndarray] = {"pelvis": np.zeros(2)}
    # An upright torso (the whole figure is rotated later), so that the body axis is x = 0.
    j["neck"] = np.array([0.0, -0.36])
    j["head"] = j["neck"] + 0.13 * _unit(-90 + rng.uniform(-20, 20))
    for side, sx in (("left", 1.0), ("right", -1.0)):
        # Angles from +x with y down (90° = straight down), mirrored for the right side, so that
        # each limb stays on its own side of the body.
        def d(angle: float, sx: float = sx) -> np.ndarray:
            v = _unit(angle)
            return np.array([sx * v[0], v[1]])
        j[f"{side}_shoulder"] = j["neck"] + np.array([sx * 0.09, 0.03])
        a = rng.uniform(-40, 105)
        j[f"{side}_elbow"] = j[f"{side}_shoulder"] + 0.17 * d(a)
        # The clips keep every left joint at x > 0 (and right at x < 0) whatever the draw.
        j[f"{side}_hand"] = j[f"{side}_elbow"] + 0.16 * d(np.clip(a + rng.uniform(-70, 70),
                                                                  -70, 105))
        j[f"{side}_hip"] = np.array([sx * 0.07, 0.0])
        k = rng.uniform(55, 98)
        j[f"{side}_knee"] = j[f"{side}_hip"] + 0.24 * d(k)
        foot = np.clip(k + rng.uniform(-25, 25), 50, 98)
        j[f"{side}_foot"] = j[f"{side}_knee"] + 0.24 * d(foot)
    return j


_BONES = [(_POSE_PARENT[n], n) for n in POSE_PART_NAMES if n in _POSE_PARENT] + [
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")]


def _draw_figure(canvas: np.ndarray, owner: np.ndarray, fid: int, pts: dict[str, np.ndarray],
                 height: float, color: tuple[int, int, int]) -> None:
    """Draw one figure on the image and its id on the owner map.

    The owner map gets each primitive grown by about a pixel, so that the anti-aliased fringe
    of a later figure also counts as covering what lies below it.
    """
    thick = max(1, int(round(0.035 * height)))
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    one = 1 << shift

    def p(name: str) -> tuple[int, int]:
        return tuple(int(round(v * one)) for v in pts[name])  # type: ignore[return-value]

    for a, b in _BONES:
        cv2.line(canvas, p(a), p(b), color, thick, cv2.LINE_AA, shift)
        cv2.line(owner, p(a), p(b), fid, thick + 2, cv2.LINE_8, shift)
    r_head = max(2 * one, int(round(0.075 * height * one)))
    cv2.circle(canvas, p("head"), r_head, color, -1, cv2.LINE_AA, shift)
    cv2.circle(owner, p("head"), r_head + one, fid, -1, cv2.LINE_8, shift)
    r_hand = max(int(1.5 * one), int(round(0.035 * height * one)))
    for name in ("left_hand", "right_hand"):
        cv2.circle(canvas, p(name), r_hand, _HAND_BGR, -1, cv2.LINE_AA, shift)
        cv2.circle(owner, p(name), r_hand + one, fid, -1, cv2.LINE_8, shift)
    half = max(1.5, 0.035 * height)
    for name in ("left_foot", "right_foot"):
        x, y = pts[name]
        for img, value, grow, line in ((canvas, _FOOT_BGR, 0.0, cv2.LINE_AA),
                                       (owner, fid, 1.0, cv2.LINE_8)):
            tl = (int(round((x - half - grow) * one)), int(round((y - half - grow) * one)))
            br = (int(round((x + half + grow) * one)), int(round((y + half + grow) * one)))
            cv2.rectangle(img, tl, br, value, -1, line, shift)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(10, 90, size=3)
    noise = rng.normal(0.0, 6.0, size=(size, size, 1))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def draw_pose_image(rng: np.random.Generator, size: int, num_parts: int,
                    max_people: int) -> tuple[np.ndarray, list[dict]]:
    """Draw one stick-figure image.

    Returns:
        ``(image, people)``: the (size, size, 3) uint8 BGR image and one dict per figure with
        ``keypoints`` (num_parts, 3) float64 x, y, v (COCO visibility) and ``bbox`` [x, y, w, h].
    """
    image = _background(rng, size)
    owner = np.zeros((size, size), dtype=np.int32)
    names = POSE_PART_NAMES[:num_parts]
    n = int(rng.integers(1, max_people + 1))
    figures = []
    for fid in range(1, n + 1):
        height = size * rng.uniform(0.3, 0.75)
        rot = _rot(rng.uniform(-25, 25))
        origin = rng.uniform(0.12 * size, 0.88 * size, size=2)
        joints = _figure_joints(rng)
        pts = {k: origin + height * (rot @ v) for k, v in joints.items()}
        color = _BODY_BGR[int(rng.integers(len(_BODY_BGR)))]
        _draw_figure(image, owner, fid, pts, height, color)
        figures.append((pts, height))
    # Occluders: grey rectangles on top of everything.
    for _ in range(int(rng.binomial(2, 0.25))):
        w, h = rng.uniform(0.12, 0.35, size=2) * size
        x, y = rng.uniform(-0.1 * size, size, size=2)
        tl, br = (int(x), int(y)), (int(x + w), int(y + h))
        grey = int(rng.integers(90, 170))
        cv2.rectangle(image, tl, br, (grey, grey, grey), -1)
        cv2.rectangle(owner, tl, br, -1, -1)
    people = []
    for fid, (pts, height) in enumerate(figures, start=1):
        xy = np.array([pts[k] for k in names])
        ix, iy = np.floor(xy + 0.5).astype(np.int64).T
        inside = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        mine = np.zeros(len(names), dtype=bool)
        mine[inside] = owner[iy[inside], ix[inside]] == fid
        v = np.where(mine, 2, np.where(inside, 1, 0))
        kps = np.concatenate([np.where(inside[:, None], xy, 0.0), v[:, None]], axis=1)
        pad = 0.08 * height
        lo = np.clip(xy[inside].min(axis=0) - pad, -0.5, size - 0.5)
        hi = np.clip(xy[inside].max(axis=0) + pad, -0.5, size - 0.5)
        people.append({"keypoints": kps, "bbox": [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]})
    return image, people


# MPII joint order (aehg.data.mpii.MPII_JOINT_NAMES) from the stick figure's joints; thorax,
# upper neck and head top are placed by draw_single_image.
_SINGLE_FROM_FIGURE = ("right_foot", "right_knee", "right_hip", "left_hip", "left_knee",
                       "left_foot", "pelvis", "thorax", "upper_neck", "head_top", "right_hand",
                       "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
                       "left_hand")


def draw_single_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    """Draw one centred stick figure with the 16 MPII joints, for single-person pose.

    The thorax is the figure's neck joint (where the shoulders meet), the upper neck and the
    head top are where the neck line enters and leaves the head disc. As in the hourglass
    code's MPII files, the crop side ``200 · scale`` is 1.25 × the joints' extent around their
    box centre, and the PCKh normaliser is a tenth of it (``normalize = 20 · scale``, the ratio
    of the MPII h5 files, about the head size).

    Returns:
        ``(image, person)``: the (size, size, 3) uint8 BGR image and ``center`` (x, y),
        ``scale``, ``part`` (16, 2) x, y, ``visible`` (16,) (all 1) and ``normalize``.
    """
    image = _background(rng, size)
    owner = np.zeros((size, size), dtype=np.int32)
    height = size * rng.uniform(0.55, 0.7)
    rot = _rot(rng.uniform(-20, 20))
    joints = _figure_joints(rng)
    pts = {k: height * (rot @ v) for k, v in joints.items()}
    up = pts["head"] - pts["neck"]
    up /= max(float(np.linalg.norm(up)), 1e-9)
    r_head = max(2.0, 0.075 * height)  # the disc _draw_figure draws
    extra = {"thorax": pts["neck"], "upper_neck": pts["head"] - r_head * up,
             "head_top": pts["head"] + r_head * up}
    xy = np.array([pts[k] if k in pts else extra[k] for k in _SINGLE_FROM_FIGURE])
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    # Centre the joints' box on the image, give or take 3 %.
    shift = (size - 1) / 2.0 - (lo + hi) / 2.0 + rng.uniform(-0.03, 0.03, size=2) * size
    pts = {k: v + shift for k, v in pts.items()}
    xy = xy + shift
    color = _BODY_BGR[int(rng.integers(len(_BODY_BGR)))]
    _draw_figure(image, owner, 1, pts, height, color)
    scale = 1.25 * float((hi - lo).max()) / 200.0
    person = {"center": (lo + hi) / 2.0 + shift, "scale": scale, "part": xy,
              "visible": np.ones(len(xy)), "normalize": 20.0 * scale}
    return image, person


# --------------------------------------------------------------------------- graph drawing


def _shape_points(shape: str, cx: float, cy: float, r: float) -> np.ndarray | None:
    """Polygon of a shape inscribed in the square of half-side ``r``; None for circles."""
    if shape == "square":
        return np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) + (cx, cy)
    if shape == "triangle":
        return np.array([[0, -r], [r, r], [-r, r]]) + (cx, cy)
    if shape == "diamond":
        return np.array([[0, -r], [r, 0], [0, r], [-r, 0]]) + (cx, cy)
    if shape == "cross":
        t = r / 3
        return np.array([[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r],
                         [-t, t], [-r, t], [-r, -t], [-t, -t]]) + (cx, cy)
    if shape == "hexagon":
        a = np.radians(np.arange(6) * 60.0)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)
    return None


def _box_exit(c: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Where the segment from centre ``c`` towards ``d`` leaves the square of half-side ``r``."""
    v = d - c
    t = r / max(abs(v[0]), abs(v[1]), 1e-9)
    return c + min(t, 1.0) * v


def draw_graph_image(rng: np.random.Generator, size: int, num_classes: int,
                     num_link_classes: int, max_objects: int, max_relations: int, *,
                     shared_centre_prob: float = 0.0, reverse_prob: float = 0.0,
                     multi_predicate_prob: float = 0.0,
                     arrow_head: float = SyntheticConfig.arrow_head,
                     arrow_width: float = SyntheticConfig.arrow_width
                     ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Draw one image of shapes linked by coloured arrows.

    2–``max_objects`` shapes are placed apart (each in its own square, with a gap); arrows join
    pairs whose connecting segment passes clear of every other shape, at most
    ``max_relations`` pairs. Three options make the objects and relations collide the way
    real scenes do (docs/design.md §5); at 0 they draw nothing from ``rng``, so the images of
    the original data do not change:

    * ``shared_centre_prob``: each placed shape gets, with this probability, a *partner* of
      another colour (so another class) at exactly its centre: a smaller shape (0.5–0.8 of its
      size, and 3 px smaller at least) drawn on top of it, nested inside it or reaching past
      its outline. Centres and
      sizes are then on a quarter-pixel grid, so the boxes written with two decimals keep the
      two centres equal. An image holds up to ``2 · max_objects`` objects.
    * ``reverse_prob``: each relation also has, with this probability, its reverse (B → A, a
      predicate of its own).
    * ``multi_predicate_prob``: each relation has, with this probability, a second predicate
      for the same ordered pair.

    ``arrow_head`` and ``arrow_width`` size the arrows as fractions of ``size`` (the head at
    least 4 px and at most 0.45 of the arrow, the line at least 1 px); the defaults draw the
    original data.

    An arrow between a partner and another shape starts or ends at the partner's outline,
    crossing the shape below it, and is drawn over that shape; the arrows of one pair of
    places are drawn side by side. So the graph stays determined by the pixels.

    Returns:
        ``(image, objects, links)``: (size, size, 3) uint8 BGR; one dict per object with
        ``label`` (0-based class) and ``bbox`` [x, y, w, h] (the placed shapes first, then
        the partners); links (M, 3) int64 rows (source object, destination object, link
        class).
    """
    image = _background(rng, size)
    want = int(rng.integers(2, max_objects + 1))
    centres, radii, labels = [], [], []
    for _ in range(want * 20):
        if len(centres) == want:
            break
        r = size * rng.uniform(0.05, 0.10)
        c = rng.uniform(r + 1, size - 1 - r, size=2)
        # Gap of at least 4 px between boxes so that objects never touch.
        if all(np.abs(c - c2).max() > r + r2 + 4 for c2, r2 in zip(centres, radii, strict=True)):
            centres.append(c)
            radii.append(r)
            labels.append(int(rng.integers(num_classes)))
    n = len(centres)
    if shared_centre_prob > 0:
        # Quarter pixels are exact with the two decimals of the JSON boxes (see above).
        centres = [np.round(c * 4.0) / 4.0 for c in centres]
        radii = [round(r * 4.0) / 4.0 for r in radii]
    cen, rad = np.array(centres).reshape(n, 2), np.array(radii)
    # Only pairs whose connecting segment passes clear of every other object (2 px gap): an
    # arrow crossing a third object would make the graph ambiguous in the pixels.
    t = np.linspace(0.0, 1.0, 64)[:, None]
    pairs = []
    for a in range(n):
        for b in range(a + 1, n):
            seg = cen[a] + t * (cen[b] - cen[a])                          # (S, 2)
            gap = np.abs(seg[:, None, :] - cen[None]).max(axis=2) - rad[None]  # (S, n)
            gap[:, [a, b]] = np.inf
            start = _box_exit(cen[a], cen[b], rad[a] + 1)
            end = _box_exit(cen[b], cen[a], rad[b] + 1)
            # Arrows too short to show their head would hide the direction.
            if gap.min() > 2.0 and np.linalg.norm(end - start) >= max(8.0, 0.06 * size):
                pairs.append((a, b))
    # Objects: the placed shapes (index = place), then the partners sharing a place's centre.
    place = list(range(n))
    obj_radii = list(radii)
    obj_labels = list(labels)
    partner: dict[int, int] = {}
    if shared_centre_prob > 0:
        for s in range(n):
            if rng.random() < shared_centre_prob:
                colour = GRAPH_OBJECT_CLASSES[labels[s]][1]
                others = [k for k in range(num_classes) if GRAPH_OBJECT_CLASSES[k][1] != colour]
                partner[s] = len(place)
                place.append(s)
                # At least 3 px of the shape below stay visible around a small partner.
                r2 = min(radii[s] * rng.uniform(0.5, 0.8), radii[s] - 3.0)
                obj_radii.append(round(r2 * 4.0) / 4.0)
                obj_labels.append(int(others[int(rng.integers(len(others)))]))

    def end_object(s: int) -> int:
        # Either object at a shared place, half and half; no draw for a shape alone.
        return partner[s] if s in partner and rng.random() < 0.5 else s

    m = min(int(rng.integers(1, max_relations + 1)), len(pairs))
    chosen = rng.choice(len(pairs), size=m, replace=False) if m else np.zeros(0, dtype=np.int64)
    rows: list[tuple[int, int, int]] = []
    for k in chosen:
        a, b = pairs[int(k)]
        if rng.random() < 0.5:
            a, b = b, a
        cls = int(rng.integers(num_link_classes))
        src, dst = (end_object(a), end_object(b)) if partner else (a, b)
        rows.append((src, dst, cls))
        if multi_predicate_prob > 0 and rng.random() < multi_predicate_prob:
            rows.append((src, dst, (cls + 1 + int(rng.integers(num_link_classes - 1)))
                         % num_link_classes))
        if reverse_prob > 0 and rng.random() < reverse_prob:
            rows.append((dst, src, int(rng.integers(num_link_classes))))
    links = np.array(rows, dtype=np.int64).reshape(len(rows), 3)
    shift = 4
    scale = 1 << shift
    thick = max(1, int(size * arrow_width))
    link_bgr = list(GRAPH_LINK_COLORS.values())
    # Arrows of one pair of places side by side, across the line between the two centres.
    per_pair: dict[tuple[int, int], list[int]] = {}
    for row, (a, b, _) in enumerate(links):
        per_pair.setdefault((min(place[a], place[b]), max(place[a], place[b])), []).append(row)
    offset = np.zeros((len(links), 2))
    for (pa, pb), members in per_pair.items():
        if len(members) > 1:
            v = cen[pb] - cen[pa]
            normal = np.array([-v[1], v[0]]) / max(float(np.linalg.norm(v)), 1e-9)
            step = max(2.0, min(0.04 * size, 0.4 * min(rad[pa], rad[pb])))
            for i, row in enumerate(members):
                offset[row] = (i - (len(members) - 1) / 2.0) * step * normal

    def draw_arrow(row: int) -> None:
        a, b, cls = links[row]
        start = _box_exit(cen[place[a]], cen[place[b]], obj_radii[a] + 1)
        end = _box_exit(cen[place[b]], cen[place[a]], obj_radii[b] + 1)
        if offset[row].any():
            start, end = start + offset[row], end + offset[row]
        length = float(np.linalg.norm(end - start))
        tip = min(0.45, max(4.0, arrow_head * size) / max(length, 1e-6))
        cv2.arrowedLine(image, tuple(int(round(v * scale)) for v in start),
                        tuple(int(round(v * scale)) for v in end), link_bgr[cls], thick,
                        cv2.LINE_AA, shift, tip)

    def draw_shape(i: int) -> None:
        c, r = cen[place[i]], obj_radii[i]
        shape, color = GRAPH_OBJECT_CLASSES[obj_labels[i]]
        bgr = _OBJECT_COLORS[color]
        poly = _shape_points(shape, c[0], c[1], r)
        if poly is None:
            cv2.circle(image, tuple(int(round(v * scale)) for v in c), int(round(r * scale)), bgr,
                       -1, cv2.LINE_AA, shift)
        else:
            cv2.fillPoly(image, [np.round(poly * scale).astype(np.int32)], bgr, cv2.LINE_AA, shift)

    # Arrows between placed shapes, the placed shapes, then the arrows of partners (over the
    # shape below them) and the partners on top.
    touches = [place[a] != a or place[b] != b for a, b, _ in links]
    for row in range(len(links)):
        if not touches[row]:
            draw_arrow(row)
    for i in range(n):
        draw_shape(i)
    for row in range(len(links)):
        if touches[row]:
            draw_arrow(row)
    for i in range(n, len(place)):
        draw_shape(i)
    objects = []
    for i in range(len(place)):
        c, r = cen[place[i]], obj_radii[i]
        objects.append({"label": obj_labels[i], "bbox": [c[0] - r, c[1] - r, 2 * r, 2 * r]})
    return image, objects, links


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`ensure_synthetic` put the files."""

    root: Path
    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path

    def json(self, split: str) -> Path:
        return self.train_json if split == "train" else self.val_json

    def images(self, split: str) -> Path:
        return self.train_images if split == "train" else self.val_images


def _paths(root: Path, kind: str = "pose") -> SyntheticPaths:
    # The single-person kind is written in the hourglass code's MPII h5 layout.
    ext = "h5" if kind == "single" else "json"
    return SyntheticPaths(root, root / "annotations" / f"train.{ext}", root / "images" / "train",
                          root / "annotations" / f"val.{ext}", root / "images" / "val")


_COLLISION_FIELDS = ("shared_centre_prob", "reverse_prob", "multi_predicate_prob")
# The arrow sizes of the original data: the config's defaults.
_ARROW_DEFAULTS = {k: getattr(SyntheticConfig, k) for k in ("arrow_head", "arrow_width")}


def _spec(cfg: SyntheticConfig) -> dict:
    spec = dataclasses.asdict(cfg)
    # Fields of the other kind do not change the files.
    graph_only = ("num_object_classes", "num_link_classes", "max_objects", "max_relations",
                  *_COLLISION_FIELDS, *_ARROW_DEFAULTS)
    unused = graph_only if cfg.kind == "pose" else ("num_parts", "max_people")
    if cfg.kind == "single":  # always 16 joints and one person
        unused = ("num_parts", "max_people", *graph_only)
    # Collision options that are off and the default arrows leave the spec of the original
    # data (no regeneration).
    unused += tuple(k for k in _COLLISION_FIELDS if not spec[k])
    unused += tuple(k for k, v in _ARROW_DEFAULTS.items() if spec[k] == v)
    for key in dict.fromkeys(unused):
        spec.pop(key)
    return {"generator": "aehg.data.synthetic", "version": GENERATOR_VERSION, **spec}


def _round_list(values: np.ndarray | list[float], ndigits: int = 2) -> list[float]:
    return [round(float(v), ndigits) for v in values]


def _generate_single(cfg: SyntheticConfig, split: str, image_dir: Path, h5_path: Path) -> dict:
    """The single-person kind: PNG images and the MPII h5 of one centred figure each."""
    from aehg.data.mpii import MpiiAnnotations, write_mpii_h5

    count = cfg.num_train if split == "train" else cfg.num_val
    rows: dict[str, list] = {k: [] for k in ("center", "scale", "part", "visible", "normalize")}
    names = []
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for i in range(count):
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], i])
        image, person = draw_single_image(rng, cfg.image_size)
        names.append(f"{i:06d}.png")
        for key in rows:
            rows[key].append(person[key])
        if not cv2.imwrite(str(image_dir / names[-1]), image, png):
            raise OSError(f"cannot write image {image_dir / names[-1]}")
    n = len(names)
    ann = MpiiAnnotations(h5_path, names, np.asarray(rows["center"]).reshape(n, 2),
                          np.asarray(rows["scale"]), np.asarray(rows["part"]).reshape(n, 16, 2),
                          np.asarray(rows["visible"]).reshape(n, 16),
                          np.asarray(rows["normalize"]), np.arange(n, dtype=np.int64),
                          np.zeros(n, np.int64))
    write_mpii_h5(h5_path, ann)
    return {"images": n}


def generate_split(cfg: SyntheticConfig, split: str, image_dir: str | os.PathLike[str],
                   json_path: str | os.PathLike[str]) -> dict:
    """Generate one split: write its PNG images and its COCO JSON; return the JSON dict."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    cfg.validate()
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "single":
        return _generate_single(cfg, split, image_dir, Path(json_path))
    count = cfg.num_train if split == "train" else cfg.num_val
    images, annotations, relationships = [], [], []
    ann_id = 1
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for i in range(count):
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], i])
        image_id = i + 1
        file_name = f"{i:06d}.png"
        if cfg.kind == "pose":
            image, people = draw_pose_image(rng, cfg.image_size, cfg.num_parts, cfg.max_people)
            for person in people:
                kps = person["keypoints"]
                x, y, w, h = person["bbox"]
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "bbox": _round_list(person["bbox"]), "area": round(float(w * h), 2),
                    "segmentation": [_round_list([x, y, x + w, y, x + w, y + h, x, y + h])],
                    "keypoints": [v for row in kps for v in (*_round_list(row[:2]), int(row[2]))],
                    "num_keypoints": int((kps[:, 2] > 0).sum()),
                })
                ann_id += 1
        else:
            image, objects, links = draw_graph_image(
                rng, cfg.image_size, cfg.num_object_classes, cfg.num_link_classes,
                cfg.max_objects, cfg.max_relations, shared_centre_prob=cfg.shared_centre_prob,
                reverse_prob=cfg.reverse_prob, multi_predicate_prob=cfg.multi_predicate_prob,
                arrow_head=cfg.arrow_head, arrow_width=cfg.arrow_width)
            first = ann_id
            for obj in objects:
                x, y, w, h = obj["bbox"]
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": obj["label"] + 1,
                    "iscrowd": 0, "bbox": _round_list(obj["bbox"]),
                    "area": round(float(w * h), 2),
                    "segmentation": [_round_list([x, y, x + w, y, x + w, y + h, x, y + h])],
                })
                ann_id += 1
            for src, dst, cls in links:
                relationships.append({
                    "id": len(relationships) + 1, "image_id": image_id,
                    "subject_id": first + int(src), "object_id": first + int(dst),
                    "predicate_id": int(cls) + 1,
                })
        if not cv2.imwrite(str(image_dir / file_name), image, png):
            raise OSError(f"cannot write image {image_dir / file_name}")
        images.append({"id": image_id, "file_name": file_name, "width": cfg.image_size,
                       "height": cfg.image_size})
    data: dict = {
        "info": {"description": f"aehg synthetic {cfg.kind} data ({split})",
                 "version": str(GENERATOR_VERSION)},
        "licenses": [], "images": images, "annotations": annotations,
    }
    if cfg.kind == "pose":
        data["categories"] = [pose_category(cfg.num_parts)]
    else:
        cats, preds = graph_categories(cfg.num_object_classes, cfg.num_link_classes)
        data["categories"] = cats
        data["predicate_categories"] = preds
        data["relationships"] = relationships
    write_json(json_path, data)
    return data


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """An exclusive lock on ``root/.lock`` so that parallel ranks generate only once."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_ours(root: Path) -> bool:
    """True when ``root`` carries aehg's marker, or the ``spec.json`` of an aehg generator (the
    folders generated before the marker existed)."""
    if (root / MARKER_NAME).is_file():
        return True
    try:
        spec = json.loads((root / "spec.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(spec, dict) and spec.get("generator") == "aehg.data.synthetic"


def check_synthetic_root(root: str | os.PathLike[str]) -> None:
    """Refuse a ``root`` that synthetic generation could damage.

    Generation replaces the images and annotations under its folder, so it writes only into a
    folder that does not exist, is empty (but for aehg's own ``.lock``), or carries its marker
    (``.aehg-synthetic``, or an aehg ``spec.json``).

    Raises:
        SyntheticFolderError: ``root`` is a file, or a folder with other contents; the message
            names it. Nothing is changed.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise SyntheticFolderError(f"{root}: synthetic data need a folder, but this is a file; "
                                   f"choose another data.root / --root")
    if not root.is_dir() or _is_ours(root):
        return
    entries = sorted(e.name for e in root.iterdir() if e.name != ".lock")
    if entries:
        shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
        count = f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}"
        raise SyntheticFolderError(
            f"{root}: refusing to write synthetic data into a folder aehg did not create (it "
            f"holds {count}: {shown}; no {MARKER_NAME} marker or aehg "
            f"spec.json); nothing was changed. Choose a new or empty folder for data.root / "
            f"--root")


def _clear_images(folder: Path) -> None:
    """Remove the images a previous generation wrote (``NNNNNN.png``), nothing else."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _IMAGE_NAME.fullmatch(path.name) and path.is_file():
            path.unlink()


def ensure_synthetic(cfg: SyntheticConfig, root: str | os.PathLike[str]) -> SyntheticPaths:
    """Generate the synthetic dataset under ``root`` unless it is already there with this spec.

    ``root`` must be new, empty, or a folder of aehg synthetic data (:func:`check_synthetic_root`):
    a user's folder is never written into. The marker ``root/.aehg-synthetic`` is written first
    and the spec (``root/spec.json``) last, so an interrupted run is recognised and redone; a spec
    that differs (another seed, size, kind …) replaces the old images (only the ``NNNNNN.png``
    files generation writes) and annotations.

    Raises:
        SyntheticFolderError: ``root`` is a file or a folder aehg did not create.
        ConfigError: an invalid spec.
    """
    cfg.validate()
    root = Path(root)
    paths = _paths(root, cfg.kind)
    spec = _spec(cfg)
    spec_path = root / "spec.json"
    check_synthetic_root(root)  # before the lock file is created in it
    with _lock(root):
        if spec_path.is_file() and paths.train_json.is_file() and paths.val_json.is_file():
            try:
                if json.loads(spec_path.read_text()) == spec:
                    return paths
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
        write_text(root / MARKER_NAME, _MARKER_TEXT)
        spec_path.unlink(missing_ok=True)
        for d in (paths.train_images, paths.val_images):
            _clear_images(d)
        log.info("generating synthetic %s data under %s (%d train, %d val images)", cfg.kind,
                 root, cfg.num_train, cfg.num_val)
        for split in ("train", "val"):
            generate_split(cfg, split, paths.images(split), paths.json(split))
        write_json(spec_path, spec, indent=1)
    return paths
