"""COCO-format datasets: the shared reading/augmentation pipeline and the keypoint dataset.

:class:`CocoKeypointDataset` reads a COCO person-keypoints JSON (any keypoint set: names, skeleton
and flip map come from the JSON's category and the arguments) and an image folder. Each sample is
one OpenCV affine warp of one image (rotation, scale, translation, horizontal flip with the
left/right swap of the flip map, then colour jitter) plus the targets of
:func:`aehg.data.targets.build_targets` at output resolution. Crowd regions and people without
annotated keypoints become the loss mask. In validation mode the long side is scaled to the input
size and centred, and ``meta["transform"]`` maps original pixels to output-map pixels (invert it to
bring predictions back).

Every annotation is checked when the file is opened (:func:`load_coco_json`): a JSON that is not
COCO, or a broken value anywhere in it (a NaN or string coordinate, a visibility of 3, a malformed
crowd RLE, a skeleton pair of one index, an ``image_id`` of another type than the images' ids …)
raises :class:`DataFormatError` naming the file, the id and the field. A dataset without a usable
image (none at all, or none with an annotated person when training) is a ``DataFormatError`` too.
A missing, undecodable or truncated image raises ``FileNotFoundError`` /
:class:`UnreadableImageError` naming the file and the image id, unless ``skip_unreadable`` is set:
then the image is skipped, logged and counted in ``stats["skipped_images"]`` (in training replaced
by the next image, in evaluation left out: :meth:`CocoBase.try_get`).

Example:
    >>> ds = CocoKeypointDataset("ann/person_keypoints_val2017.json", "val2017", train=False)
    >>> sample = ds[0]
    >>> sample["image"].shape, sample["heatmaps"].shape
    (torch.Size([3, 512, 512]), torch.Size([17, 128, 128]))
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from aehg.config import AugmentConfig
from aehg.data.targets import TargetStats, build_targets
from aehg.data.transforms import (
    AffineParams,
    affine_matrix,
    apply_affine,
    compose,
    flip_permutation,
    input_to_output,
    random_affine_params,
    to_network_input,
    warp_image,
    warp_mask,
)
from aehg.keypoints import (
    COCO_FLIP_MAP,
    COCO_OKS_SIGMAS,
    FlipMapError,
    derive_flip_map,
    missing_flip_map_error,
)

__all__ = [
    "COCO_FLIP_MAP",
    "COCO_OKS_SIGMAS",
    "CocoKeypointDataset",
    "DataFormatError",
    "UnreadableImageError",
    "derive_flip_map",
    "load_coco_json",
    "rle_counts_total",
    "truncated_image",
]

log = logging.getLogger(__name__)



class DataFormatError(ValueError):
    """An annotation file is not in the expected format; the message names file, id and field."""


class UnreadableImageError(OSError):
    """An image file exists but cannot be decoded (or its size contradicts the JSON)."""


# --------------------------------------------------------------------------- JSON


def _seed_words(seed: int | Sequence[int]) -> list[int]:
    """A seed as a list of non-negative integers (what ``np.random.default_rng`` accepts)."""
    words = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    return [int(w) % 2**63 for w in words]


def _require(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise DataFormatError(f"{path}: {msg}")


# Singular names of the tables, for messages ("annotation id 17: …").
_LABEL = {"images": "image", "annotations": "annotation", "categories": "category",
          "predicate_categories": "predicate", "relationships": "relationship"}
_ABSENT = object()


def _show(value: Any) -> str:
    """A value as the user wrote it (JSON-ish, shortened) for messages."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    """What a JSON value is, in words: 'a string', 'a boolean', 'null', …"""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _what(value: Any) -> str:
    """A value with its kind, for messages: 'a string "12"', 'a boolean true', 'null', …"""
    return "null" if value is None else f"{_kind(value)} {_show(value)}"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _id_text(value: Any) -> str:
    # Quotes make a string id visibly different from the integer with the same digits.
    return repr(value) if isinstance(value, str) else str(value)


def _finite_number(value: Any) -> bool:
    # Exact types: bool is an int subclass, but true/false are not numbers in an annotation.
    if type(value) is float:
        return math.isfinite(value)
    # An integer beyond the float range (1e400 written without a point) is not usable either.
    return type(value) is int and abs(value) < 1e308


def _finite_array(flat: list[Any]) -> tuple[np.ndarray | None, int]:
    """``(float64 array of flat, -1)`` when every value is a finite number (not a string, not a
    boolean), else ``(None, index of the first value that is not)``."""
    if set(map(type, flat)) <= {int, float}:
        try:
            arr = np.array(flat)  # int64 or float64: cheaper than converting to float directly
            arr = arr.astype(np.float64, copy=False)
        except (OverflowError, TypeError, ValueError):  # an integer beyond int64 and float
            arr = None
        if arr is not None:
            bad = np.flatnonzero(~np.isfinite(arr))
            if not len(bad):
                return arr, -1
            return None, int(bad[0])
    return None, next(i for i, v in enumerate(flat) if not _finite_number(v))


def rle_counts_total(counts: str) -> int | None:
    """Sum of the runs of a compressed COCO RLE string, or None if the string is malformed.

    The decoding of pycocotools' ``rleFrString`` (6-bit groups from ``'0'``, continuation bit
    0x20, sign bit 0x10, runs after the second stored as differences), done in Python so that a
    broken string is reported instead of decoded past the end of the mask.
    """
    runs: list[int] = []
    data = counts.encode("ascii", errors="replace")
    p, n = 0, len(data)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = data[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return sum(runs)


class _Checker:
    """One pass over a COCO-format dict; every failure names the file, the item and the field."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.by_id: dict[str, dict[Any, dict]] = {}
        self.id_type: dict[str, type | None] = {}

    def fail(self, msg: str) -> NoReturn:
        raise DataFormatError(f"{self.path}: {msg}")

    def where(self, table: str, item: dict) -> str:
        return f"{_LABEL[table]} id {_id_text(item['id'])}"

    # ---------------------------------------------------------------- tables and ids

    def table(self, name: str, keys: Sequence[str]) -> dict[Any, dict]:
        """Index ``data[name]`` by id: objects, ids of one type (int or str), unique, ``keys``."""
        by_id: dict[Any, dict] = {}
        label = _LABEL[name]
        items = self.data[name]
        # The file's id type is the one most ids have, so that the odd one out is blamed.
        counts = Counter(type(item.get("id")) for item in items if type(item) is dict)
        id_type: type | None = max((int, str), key=lambda t: counts[t]) if counts else None
        for i, item in enumerate(items):
            if type(item) is not dict:
                self.fail(f"{name}[{i}]: expected an object, got {_what(item)}")
            if "id" not in item:
                self.fail(f"{name}[{i}]: missing field 'id'")
            iid = item["id"]
            t = type(iid)
            if t is not int and t is not str:
                self.fail(f"{name}[{i}]: field 'id' must be an integer or a string, got "
                          f"{_what(iid)}")
            if t is not id_type:
                self.fail(f"{label} id {_id_text(iid)}: field 'id' is {_kind(iid)} but "
                          f"{counts[id_type]} of the {len(items)} {label} ids are "
                          f"{'integers' if id_type is int else 'strings'}; the {label} ids of "
                          f"one file must all be integers or all strings")
            for key in keys:
                if key not in item:
                    self.fail(f"{label} id {_id_text(iid)}: missing field {key!r}")
            if iid in by_id:
                self.fail(f"{label} id {_id_text(iid)}: duplicate id")
            by_id[iid] = item
        self.by_id[name], self.id_type[name] = by_id, id_type
        return by_id

    def ref(self, item: dict, key: str, table: str, where: str | None = None) -> Any:
        """``item[key]`` names an existing item of ``table`` (with the id type of the file)."""
        value = item[key]
        if where is None:
            where = self.where("annotations", item)
        label = _LABEL[table]
        want = self.id_type[table]
        if type(value) is not int and type(value) is not str:
            kind = "a string" if want is str else "an integer"
            self.fail(f"{where}: field {key!r} must be {_article(label)} {label} id ({kind}), "
                      f"got {_what(value)}")
        if want is not None and type(value) is not want:
            example = next(iter(self.by_id[table]))
            self.fail(f"{where}: field {key!r} is {_what(value)} but the {label} ids of this "
                      f"file are {'integers' if want is int else 'strings'} (e.g. {label} id "
                      f"{_id_text(example)})")
        if value not in self.by_id[table]:
            self.fail(f"{where}: field {key!r} names missing {label} {_id_text(value)}")
        return value

    # ---------------------------------------------------------------- images, categories

    def images(self) -> None:
        for item in self.data["images"]:
            where = self.where("images", item)
            name = item["file_name"]
            if type(name) is not str or not name:
                self.fail(f"{where}: field 'file_name' must be a non-empty string, got "
                          f"{_what(name)}")
            for key in ("width", "height"):
                v = item[key]
                if type(v) is not int or v <= 0:
                    self.fail(f"{where}: field {key!r} must be a positive integer, got "
                              f"{_what(v)}")

    def categories(self, table: str = "categories") -> None:
        for cat in self.data[table]:
            where = self.where(table, cat)
            if type(cat["name"]) is not str:
                self.fail(f"{where}: field 'name' must be a string, got {_what(cat['name'])}")
            if table != "categories":
                continue
            names = cat.get("keypoints")
            if names is None:
                continue
            if type(names) is not list or not names or not all(type(n) is str for n in names):
                self.fail(f"{where}: field 'keypoints' must be a non-empty list of part names "
                          f"(strings), got {_show(names)}")
            k = len(names)
            skeleton = cat.get("skeleton", [])
            if type(skeleton) is not list:
                self.fail(f"{where}: field 'skeleton' must be a list of [a, b] pairs of 1-based "
                          f"part indices, got {_show(skeleton)}")
            for pair in skeleton:
                ok = (type(pair) is list and len(pair) == 2
                      and all(type(v) is int and 1 <= v <= k for v in pair))
                if not ok:
                    self.fail(f"{where}: field 'skeleton': {_show(pair)} is not a pair of two "
                              f"1-based part indices in 1..{k}")
            flip = cat.get("flip_map")
            if flip is not None and (type(flip) is not list
                                     or not all(type(v) is int for v in flip)):
                self.fail(f"{where}: field 'flip_map' must be a list of integers (0-based part "
                          f"indices), got {_show(flip)}")
            sigmas = cat.get("oks_sigmas")
            if sigmas is not None and (type(sigmas) is not list
                                       or not all(_finite_number(v) for v in sigmas)):
                self.fail(f"{where}: field 'oks_sigmas' must be a list of numbers, got "
                          f"{_show(sigmas)}")

    # ---------------------------------------------------------------- annotations

    def annotations(self) -> None:
        """Every annotation: references, iscrowd, bbox, area, num_keypoints, keypoints,
        segmentation. Python only looks at the structure per annotation; the numbers are
        checked in bulk (one numpy pass per field), and messages are built only on failure."""
        images, cats = self.by_id["images"], self.by_id["categories"]
        image_type, cat_type = self.id_type["images"], self.id_type["categories"]
        parts = {cid: 3 * len(c["keypoints"]) for cid, c in cats.items()
                 if isinstance(c.get("keypoints"), list)}
        kp_lists: list[list] = []
        kp_owner: list[dict] = []
        boxes: list[list] = []
        box_owner: list[dict] = []
        polys: list[list] = []
        poly_owner: list[dict] = []
        poly_size: list[tuple[int, int]] = []
        for ann in self.data["annotations"]:
            image_id, cat_id = ann["image_id"], ann["category_id"]
            # Fast path: the reference has the file's id type and names an existing item.
            if type(image_id) is not image_type or image_id not in images:
                self.ref(ann, "image_id", "images")
            if type(cat_id) is not cat_type or cat_id not in cats:
                self.ref(ann, "category_id", "categories")
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1) or type(crowd) not in (int, bool):
                self.fail(f"{self.where('annotations', ann)}: field 'iscrowd' must be 0 or 1, "
                          f"got {_what(crowd)}")
            box = ann.get("bbox", _ABSENT)
            if box is not _ABSENT:
                if type(box) is not list or len(box) != 4:
                    self.fail(f"{self.where('annotations', ann)}: field 'bbox' must be [x, y, w, "
                              f"h] (4 numbers), got {_show(box)}")
                boxes.append(box)
                box_owner.append(ann)
            area = ann.get("area", 0)
            if not (_finite_number(area) and area >= 0):
                self.fail(f"{self.where('annotations', ann)}: field 'area' must be a number "
                          f">= 0, got {_what(area)}")
            nk = ann.get("num_keypoints", 0)
            if type(nk) is not int or nk < 0:
                self.fail(f"{self.where('annotations', ann)}: field 'num_keypoints' must be an "
                          f"integer >= 0, got {_what(nk)}")
            kps = ann.get("keypoints", _ABSENT)
            if kps is not _ABSENT:
                n = len(kps) if type(kps) is list else -1
                if n != parts.get(cat_id, n) or n % 3:
                    self.keypoint_shape(ann, kps)
                kp_lists.append(kps)
                kp_owner.append(ann)
            seg = ann.get("segmentation")
            if seg is None:
                continue
            if type(seg) is list:
                for poly in seg:
                    if type(poly) is not list or len(poly) % 2:
                        self.polygon_shape(ann, seg, poly)
                    if poly:
                        polys.append(poly)
                        poly_owner.append(ann)
                        info = images[image_id]
                        poly_size.append((info["width"], info["height"]))
            elif type(seg) is dict:
                self.rle(self.where("annotations", ann), seg, image_id)
            else:
                self.fail(f"{self.where('annotations', ann)}: field 'segmentation' must be a "
                          f"list of polygons or an RLE object, got {_what(seg)}")
        self.keypoint_values(kp_lists, kp_owner)
        self.box_values(boxes, box_owner)
        self.polygon_values(polys, poly_owner, poly_size)

    def keypoint_shape(self, ann: dict, kps: Any) -> NoReturn:
        where = self.where("annotations", ann)
        if type(kps) is not list:
            self.fail(f"{where}: field 'keypoints' must be a list [x, y, v, …], got {_what(kps)}")
        cat_id = ann["category_id"]
        cat = self.by_id["categories"][cat_id]
        names = cat.get("keypoints")
        if isinstance(names, list) and len(kps) != 3 * len(names):
            k = len(names)
            self.fail(f"{where}: field 'keypoints' has {len(kps)} values, expected {3 * k} (3 x "
                      f"{k} parts of category id {_id_text(cat_id)} {cat['name']!r})")
        self.fail(f"{where}: field 'keypoints' has {len(kps)} values, expected a multiple of 3 "
                  f"([x, y, v] per part)")

    def polygon_shape(self, ann: dict, seg: list, poly: Any) -> NoReturn:
        where = self.where("annotations", ann)
        if type(poly) is not list:
            self.fail(f"{where}: field 'segmentation' must be a list of polygons ([x1, y1, x2, "
                      f"y2, …] each) or an RLE object, got {_show(seg)}")
        self.fail(f"{where}: field 'segmentation' has a polygon of {len(poly)} values, expected "
                  f"an even number (x, y pairs)")

    def keypoint_values(self, lists: list[list], owners: list[dict]) -> None:
        flat = list(itertools.chain.from_iterable(lists))
        arr, bad = _finite_array(flat)
        if arr is not None:
            vis = arr[2::3]
            wrong = np.flatnonzero((vis != 0) & (vis != 1) & (vis != 2))
            if not len(wrong):
                return
            bad = 3 * int(wrong[0]) + 2
        ann, pos = self.locate(lists, owners, bad)
        value = flat[bad]
        where = self.where("annotations", ann)
        if pos % 3 == 2 and _finite_number(value):
            self.fail(f"{where}: field 'keypoints': visibility v of part {pos // 3} is "
                      f"{_show(value)}, expected 0, 1 or 2")
        self.fail(f"{where}: field 'keypoints': {('x', 'y', 'v')[pos % 3]} of part {pos // 3} "
                  f"must be a finite number, got {_what(value)}")

    def box_values(self, boxes: list[list], owners: list[dict]) -> None:
        arr, bad = _finite_array(list(itertools.chain.from_iterable(boxes)))
        if arr is None:
            ann = owners[bad // 4]
            self.fail(f"{self.where('annotations', ann)}: field 'bbox' must be [x, y, w, h] of "
                      f"finite numbers, got {_show(ann['bbox'])}")
        neg = np.flatnonzero((arr.reshape(-1, 4)[:, 2:] < 0).any(axis=1))
        if len(neg):
            ann = owners[int(neg[0])]
            self.fail(f"{self.where('annotations', ann)}: field 'bbox' must be [x, y, w, h] "
                      f"with w, h >= 0, got {_show(ann['bbox'])}")

    def polygon_values(self, polys: list[list], owners: list[dict],
                       sizes: list[tuple[int, int]]) -> None:
        """Polygon coordinates are finite numbers within one image size around their image:
        pycocotools rasterises a polygon edge by edge with memory in proportion to its length,
        so one stray coordinate (1e9) would exhaust the memory instead of giving a mask."""
        flat = list(itertools.chain.from_iterable(polys))
        arr, bad = _finite_array(flat)
        if arr is None:
            ann, _ = self.locate(polys, owners, bad)
            self.fail(f"{self.where('annotations', ann)}: field 'segmentation': polygon "
                      f"coordinates must be finite numbers, got {_what(flat[bad])}")
        if not polys:
            return
        lengths = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) // 2
        xy = arr.reshape(-1, 2)
        low = np.minimum.reduceat(xy, starts, axis=0)                       # (P, 2)
        high = np.maximum.reduceat(xy, starts, axis=0)
        wh = np.asarray(sizes, dtype=np.float64)
        out = np.flatnonzero(((low < -wh) | (high > 2 * wh)).any(axis=1))
        if not len(out):
            return
        row = int(out[0])
        points = xy[starts[row]:starts[row] + lengths[row] // 2]
        w, h = wh[row]
        x, y = next(p for p in points if p[0] < -w or p[0] > 2 * w or p[1] < -h or p[1] > 2 * h)
        ann = owners[row]
        self.fail(f"{self.where('annotations', ann)}: field 'segmentation': polygon point "
                  f"({x:g}, {y:g}) lies far outside its image {_id_text(ann['image_id'])} "
                  f"({w:g} x {h:g}); points must be within one image size of the image")

    @staticmethod
    def locate(lists: list[list], owners: list[dict], flat_index: int) -> tuple[dict, int]:
        """The owner of element ``flat_index`` of the concatenated lists, and its position."""
        ends = np.cumsum([len(x) for x in lists])
        row = int(np.searchsorted(ends, flat_index, side="right"))
        start = int(ends[row - 1]) if row else 0
        return owners[row], flat_index - start

    def rle(self, where: str, seg: dict, image_id: Any) -> None:
        info = self.by_id["images"][image_id]
        height, width = info["height"], info["width"]
        size, counts = seg.get("size"), seg.get("counts")
        if type(size) is not list or len(size) != 2 or not all(type(v) is int for v in size):
            self.fail(f"{where}: field 'segmentation' is an RLE object whose 'size' must be "
                      f"[height, width] (integers), got {_show(size)}")
        if size != [height, width]:
            self.fail(f"{where}: field 'segmentation' is an RLE of size {size} but its image "
                      f"{_id_text(image_id)} is [height, width] = [{height}, {width}]")
        if type(counts) is list:
            if not set(map(type, counts)) <= {int} or (counts and min(counts) < 0):
                self.fail(f"{where}: field 'segmentation': RLE 'counts' must be run lengths "
                          f"(integers >= 0), got {_show(counts)}")
            total: int | None = sum(counts)
        elif type(counts) is str:
            total = rle_counts_total(counts)
            if total is None:
                self.fail(f"{where}: field 'segmentation': RLE 'counts' is not a valid "
                          f"compressed RLE string: {_show(counts)}")
        else:
            self.fail(f"{where}: field 'segmentation': RLE 'counts' must be a list of run "
                      f"lengths or a compressed string, got {_what(counts)}")
        if total != height * width:
            self.fail(f"{where}: field 'segmentation': RLE runs cover {total} pixels, expected "
                      f"height x width = {height * width}")

    # ---------------------------------------------------------------- relations

    def relationships(self) -> None:
        anns = self.by_id["annotations"]
        for rel in self.data["relationships"]:
            where = self.where("relationships", rel)
            image_id = self.ref(rel, "image_id", "images", where)
            for key in ("subject_id", "object_id"):
                ann = anns[self.ref(rel, key, "annotations", where)]
                if ann["image_id"] != image_id:
                    self.fail(f"{where}: field {key!r} names annotation {_id_text(ann['id'])} "
                              f"of image {_id_text(ann['image_id'])}, not of image "
                              f"{_id_text(image_id)}")
            self.ref(rel, "predicate_id", "predicate_categories", where)


def load_coco_json(path: str | os.PathLike[str], *, relations: bool = False) -> dict[str, Any]:
    """Read and check a COCO-format JSON (plus the relation fields of docs/design.md §5 if asked).

    Every item is checked once, when the file is opened, so that a broken annotation is named
    now and not when its sample is drawn hours later:

    * top level: ``images``, ``annotations``, ``categories`` (and ``predicate_categories``,
      ``relationships``) are lists of objects;
    * ids: present, unique, integers or strings, one type per table; every reference
      (``image_id``, ``category_id``, ``subject_id``, ``object_id``, ``predicate_id``) has the
      type of the ids it names (the string ``"234748"`` is reported as a string, not as a missing
      image) and names an existing item;
    * images: ``file_name`` a non-empty string, ``width`` and ``height`` positive integers;
    * categories: ``name`` a string; ``keypoints`` a list of names, ``skeleton`` pairs of two
      1-based part indices, ``flip_map`` integers, ``oks_sigmas`` finite numbers;
    * annotations: ``iscrowd`` 0 or 1; ``bbox`` 4 finite numbers with w, h ≥ 0; ``area`` and
      ``num_keypoints`` ≥ 0; ``keypoints`` 3 values per part of its category, finite numbers
      (not strings, not booleans) with visibility 0, 1 or 2; ``segmentation`` a list of polygons
      of finite numbers with an even length, within one image size around the image (polygons
      of fewer than 3 points have no area: they are tolerated, as degenerate shapes, and
      ignored when masks are drawn) or an RLE object whose ``size`` is the image's
      ``[height, width]`` and whose ``counts`` (runs or compressed string) cover it exactly;
    * relationships: subject and object are annotations of the relationship's image.

    Python looks at each annotation's structure once and the numbers are checked in bulk (numpy
    over all annotations): about 4 s for 250,000 COCO person annotations, against about 10 s
    for ``json.load`` of that file.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not JSON, or not COCO; the message names the file, the id (or the
            position when the id itself is broken) and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise DataFormatError(f"{path}: not valid JSON: nested too deeply") from None
    _require(isinstance(data, dict), path, f"not a COCO file: expected a JSON object at the top "
             f"level, got {type(data).__name__}")
    fields = ["images", "annotations", "categories"]
    if relations:
        fields += ["predicate_categories", "relationships"]
    for name in fields:
        _require(name in data, path, f"not a COCO file: missing field {name!r}")
        _require(isinstance(data[name], list), path,
                 f"field {name!r}: expected a list, got {type(data[name]).__name__}")
    check = _Checker(path, data)
    check.table("images", ("file_name", "width", "height"))
    check.table("categories", ("name",))
    check.table("annotations", ("image_id", "category_id"))
    check.images()
    check.categories()
    check.annotations()
    if relations:
        check.table("predicate_categories", ("name",))
        check.categories("predicate_categories")
        check.table("relationships", ("image_id", "subject_id", "object_id", "predicate_id"))
        check.relationships()
    return data


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` index over an already loaded dict (without its progress prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def ann_to_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 region of an annotation: polygons, RLE, or its box if neither."""
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and isinstance(seg[0], (list, tuple)):
        polys = [p for p in seg if len(p) >= 6]
        if polys:
            return mask_utils.decode(mask_utils.merge(
                mask_utils.frPyObjects(polys, height, width)))
    elif isinstance(seg, dict) and "counts" in seg:
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) \
            else seg
        return mask_utils.decode(rle)
    out = np.zeros((height, width), dtype=np.uint8)
    bbox = ann.get("bbox")
    if bbox is not None and len(bbox) == 4:
        x, y, w, h = bbox
        x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
        out[y0:int(np.ceil(y + h)), x0:int(np.ceil(x + w))] = 1
    return out


def _jpeg_first_scan(data: bytes) -> int | None:
    """Offset of the first start-of-scan marker (FF DA) of a JPEG, walking its header segments
    (so an EXIF thumbnail inside APP1 is skipped), or None if the header does not parse."""
    p, n = 2, len(data)
    while p + 4 <= n:
        if data[p] != 0xFF:
            return None
        marker = data[p + 1]
        if marker == 0xFF:                       # fill byte before a marker
            p += 1
        elif marker == 0xDA:
            return p
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            p += 2
        else:
            p += 2 + int.from_bytes(data[p + 2:p + 4], "big")
    return None


def truncated_image(path: str | os.PathLike[str]) -> str | None:
    """Why an image file was cut short (e.g. by an interrupted copy), or None.

    A JPEG needs its end-of-image marker (FF D9) after its first scan (inside the entropy-coded
    data FF is always followed by 00 or a restart marker, so the marker cannot be mistaken; data
    after it is allowed); a PNG needs its ``IEND`` chunk. Other formats are not checked. Costs
    one read of the file and a byte search.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\xff\xd8":
        scan = _jpeg_first_scan(data)
        if scan is not None and data.find(b"\xff\xd9", scan) < 0:
            return "JPEG without its end-of-image marker"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and data.rfind(b"IEND") < 0:
        return "PNG without its IEND chunk"
    return None


# --------------------------------------------------------------------------- base


class CocoBase(Dataset):
    """The reading, augmentation and bookkeeping shared by the keypoint and relation datasets.

    Subclasses fill ``self.ids`` (image ids in order) and implement :meth:`_instances` (what the
    targets are built from) and :meth:`_build` (targets + meta from the transformed instances).
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], *,
                 train: bool, input_size: int, output_size: int, sigma: float,
                 max_instances: int, tag_per_class: bool, augment: AugmentConfig | None,
                 skip_unreadable: bool, seed: int, sparse_targets: bool = False) -> None:
        if input_size % output_size:
            raise ValueError(f"input_size {input_size} is not a multiple of output_size "
                             f"{output_size}")
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir)
        self.train = train
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.sigma = float(sigma)
        self.max_instances = int(max_instances)
        self.tag_per_class = bool(tag_per_class)
        # Sparse targets (peaks, mask bits) for rendering on the training device.
        self.sparse_targets = bool(sparse_targets)
        self.augment = augment if augment is not None else AugmentConfig()
        self.skip_unreadable = skip_unreadable
        self._seed: list[int] = _seed_words(seed)
        self._epoch = 0
        self._in_to_out = input_to_output(self.input_size, self.output_size)
        self.ids: list[int] = []
        self.coco: COCO
        self.skipped: dict[int, str] = {}
        self._running = TargetStats()
        self._running_extra: dict[str, int] = {}
        self._stats: dict[str, int] | None = None

    # ------------------------------------------------------------------ bookkeeping

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Set the base seed of the augmentations (e.g. the run's seed and the rank)."""
        self._seed = _seed_words(seed)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentations.

        Sample ``index`` of epoch ``e`` draws from ``default_rng([*seed, e, index])``: the same
        augmentation whichever worker loads it and whatever was loaded before, so a run resumed
        in the middle of an epoch sees exactly the samples of an uninterrupted one.
        """
        self._epoch = int(epoch)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The random stream of sample ``index`` in the current epoch."""
        return np.random.default_rng([*self._seed, self._epoch, int(index)])

    def __len__(self) -> int:
        return len(self.ids)

    def _check_usable(self, skip_unreadable: bool) -> None:
        """After a subclass filled ``ids``: refuse a dataset without images (nothing to train on
        or to evaluate) and, with ``skip_unreadable``, drop the images whose file is missing."""
        if not self.coco.imgs:
            raise DataFormatError(f"{self.json_path}: no image (field 'images' is empty): "
                                  f"nothing to {'train on' if self.train else 'evaluate'}")
        if skip_unreadable:
            self._drop_missing_files()
            if not self.ids and self.skipped:
                raise FileNotFoundError(
                    f"{self.image_dir}: none of the {len(self.skipped)} image files of "
                    f"{self.json_path} is there (all skipped by data.skip_unreadable)")

    def _drop_missing_files(self) -> None:
        """With ``skip_unreadable``: drop images whose file is missing, logging each one."""
        keep = []
        for img_id in self.ids:
            path = self.image_dir / self.coco.imgs[img_id]["file_name"]
            if path.is_file():
                keep.append(img_id)
            else:
                self.mark_skipped(img_id, f"missing file {path}")
        self.ids = keep

    def mark_skipped(self, img_id: Any, why: str) -> None:
        """Record that image ``img_id`` is skipped as unreadable (logged once per process)."""
        if img_id not in self.skipped:
            self.skipped[img_id] = why
            log.warning("skipping image id %s: %s", img_id, why)

    def read_image(self, img_id: Any) -> np.ndarray:
        """The BGR uint8 image of ``img_id``; raises naming the file and the image id.

        A truncated file is an error too: OpenCV decodes a JPEG cut short as a picture whose
        missing part is grey, with only a libjpeg warning on stderr. A JPEG must hold its end
        marker after its first scan, a PNG its ``IEND`` chunk (:func:`truncated_image`).

        Raises:
            FileNotFoundError: no such file.
            UnreadableImageError: undecodable, truncated, or of another size than the JSON says.
        """
        info = self.coco.imgs[img_id]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} (image id {img_id} in "
                                    f"{self.json_path})")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UnreadableImageError(f"cannot decode image file {path} (image id {img_id} in "
                                       f"{self.json_path})")
        problem = truncated_image(path)
        if problem is not None:
            raise UnreadableImageError(f"image file {path} is truncated ({problem}; image id "
                                       f"{img_id} in {self.json_path})")
        if image.shape[:2] != (info["height"], info["width"]):
            raise UnreadableImageError(
                f"image file {path} (image id {img_id}) is {image.shape[1]}x{image.shape[0]} "
                f"but {self.json_path} says {info['width']}x{info['height']}")
        return image

    def read_or_skip(self, img_id: Any) -> np.ndarray | None:
        """:meth:`read_image`, or None (recorded in ``skipped``) for a missing or unreadable
        file when ``skip_unreadable`` is set."""
        try:
            return self.read_image(img_id)
        except (FileNotFoundError, UnreadableImageError) as exc:
            if not self.skip_unreadable:
                raise
            self.mark_skipped(img_id, str(exc))
            return None

    # ------------------------------------------------------------------ samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index)

    def get(self, index: int, params: AffineParams | None = None) -> dict[str, Any]:
        """Sample ``index`` with the given augmentation (None: random when training, else none).

        With ``skip_unreadable`` an unreadable image is replaced by the next readable one (and
        logged, counted in ``stats["skipped_images"]``), which keeps a training epoch full. For
        evaluation use :meth:`try_get`: a replacement would be predicted twice.

        Returns:
            ``"image"`` (3, H_in, W_in) float32 tensor normalised with ImageNet mean/std, the
            target arrays of :func:`build_targets` as tensors, and ``"meta"`` (image_id,
            file_name, orig_size (h, w), input_transform and transform as 2×3 float64 arrays,
            flipped, stats, and the transformed instances in output pixels).
        """
        for attempt in range(len(self.ids)):
            img_id = self.ids[(index + attempt) % len(self.ids)]
            image = self.read_or_skip(img_id)
            if image is not None:
                return self._sample(img_id, image, params, self.sample_rng(index))
        raise UnreadableImageError(f"no readable image left in {self.json_path} "
                                   f"({len(self.skipped)} skipped as unreadable)")

    def try_get(self, index: int, params: AffineParams | None = None
                ) -> dict[str, Any] | None:
        """Sample ``index`` as :meth:`get`, but never another image: None when its image is
        missing or unreadable and ``skip_unreadable`` is set (the image is then recorded in
        ``skipped``). Evaluation uses it, so that every image is predicted at most once."""
        img_id = self.ids[index]
        image = self.read_or_skip(img_id)
        if image is None:
            return None
        return self._sample(img_id, image, params, self.sample_rng(index))

    def _params(self, params: AffineParams | None, rng: np.random.Generator) -> AffineParams:
        if params is not None:
            return params
        return random_affine_params(rng, self.augment) if self.train else AffineParams()

    def eval_sample(self, index: int) -> dict[str, Any] | None:
        """What evaluation needs of sample ``index``, without its training targets: ``"image"``
        and ``"meta"`` (image_id, file_name, orig_size, input_transform, transform, flipped,
        and what a subclass's ``_input`` adds), the same image and transforms as
        :meth:`try_get`. None when the image is missing or unreadable and ``skip_unreadable``
        is set (recorded in ``skipped``)."""
        img_id = self.ids[index]
        image = self.read_or_skip(img_id)
        if image is None:
            return None
        rng = self.sample_rng(index)
        if type(self)._sample is not CocoBase._sample:
            # A subclass with its own geometry (MpiiDataset's person crops): its sample, minus
            # the targets.
            sample = self._sample(img_id, image, None, rng)
            return {"image": sample["image"], "meta": sample["meta"]}
        tensor, meta, _ = self._input(img_id, image, None, rng)
        return {"image": tensor, "meta": meta}

    def _input(self, img_id: int, image: np.ndarray, params: AffineParams | None,
               rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, Any], AffineParams]:
        """The network input of a read image, its geometric meta and the params drawn."""
        params = self._params(params, rng)
        h, w = image.shape[:2]
        m_in = affine_matrix((h, w), self.input_size, params)
        m_out = compose(self._in_to_out, m_in)
        warped = warp_image(image, m_in, self.input_size)
        tensor = to_network_input(warped, rng, self.augment.color_jitter if self.train
                                  else 0.0)
        info = self.coco.imgs[img_id]
        meta = {"image_id": img_id, "file_name": info["file_name"], "orig_size": (h, w),
                "input_transform": m_in, "transform": m_out, "flipped": params.flip}
        return torch.from_numpy(tensor), meta, params

    def _sample(self, img_id: int, image: np.ndarray, params: AffineParams | None,
                rng: np.random.Generator) -> dict[str, Any]:
        tensor, meta, params = self._input(img_id, image, params, rng)
        targets, stats, extra, target_meta = self._targets(img_id, meta["transform"],
                                                           params.flip, with_mask=True)
        self._running = self._running + stats
        for k, v in extra.items():
            self._running_extra[k] = self._running_extra.get(k, 0) + v
        sample: dict[str, Any] = {"image": tensor}
        sample.update({k: torch.from_numpy(v) for k, v in targets.items()})
        sample["meta"] = {**meta, "stats": {**stats.as_dict(), **extra}, **target_meta}
        return sample

    def _targets(self, img_id: int, m_out: np.ndarray, flip: bool, with_mask: bool
                 ) -> tuple[dict[str, np.ndarray], TargetStats, dict[str, int], dict[str, Any]]:
        raise NotImplementedError

    def _loss_mask(self, ignore_anns: list[dict], img_id: int, m_out: np.ndarray
                   ) -> np.ndarray | None:
        """Output-resolution loss mask: 0 on the regions of ``ignore_anns``, else 1."""
        if not ignore_anns:
            return None
        info = self.coco.imgs[img_id]
        h, w = info["height"], info["width"]
        ignore = np.zeros((h, w), dtype=np.uint8)
        for ann in ignore_anns:
            ignore |= ann_to_mask(ann, h, w)
        return warp_mask(1.0 - ignore.astype(np.float32), m_out, self.output_size)

    # ------------------------------------------------------------------ statistics

    @property
    def stats(self) -> dict[str, int]:
        """Dataset statistics at validation geometry (no augmentation), from annotations only.

        ``instances_dropped``, ``parts_outside``, ``links_dropped`` and their totals
        ``instances``, ``parts``, ``links`` (:class:`TargetStats` summed over all images), the
        collision counts of the subclass, ``images`` and ``skipped_images``. Computed once on
        first access: one pass over the annotations (no image is read), which the trainer pays
        at the start of training.
        """
        if self._stats is None:
            total, extra = TargetStats(), {}
            for img_id in self.ids:
                info = self.coco.imgs[img_id]
                m_out = compose(self._in_to_out,
                                affine_matrix((info["height"], info["width"]), self.input_size))
                _, s, e, _ = self._targets(img_id, m_out, False, with_mask=False)
                total = total + s
                for k, v in e.items():
                    extra[k] = extra.get(k, 0) + v
            self._stats = {**total.as_dict(), **extra, "images": len(self.ids)}
        return {**self._stats, "skipped_images": len(self.skipped)}

    @property
    def running_stats(self) -> dict[str, int]:
        """What the samples built so far *in this process* counted (augmented geometry)."""
        return {**self._running.as_dict(), **self._running_extra,
                "skipped_images": len(self.skipped)}


# --------------------------------------------------------------------------- keypoints


class CocoKeypointDataset(CocoBase):
    """Multi-person keypoints from a COCO person-keypoints JSON and an image folder.

    Args:
        json_path: COCO keypoints JSON; its (first) category with a ``keypoints`` field defines
            the parts.
        image_dir: folder the images' ``file_name`` are relative to.
        train: random augmentation (else the validation transform) and, with ``filter_empty``,
            only images with at least one person with an annotated keypoint.
        input_size, output_size: square network input / output-map sides.
        sigma, max_instances, tag_per_class: passed to :func:`build_targets`.
        flip_map: part ``c`` of a flipped image is part ``flip_map[c]``; None: the category's
            ``flip_map`` field, else derived from the part names' side words
            (:func:`aehg.keypoints.derive_flip_map`); names without side words are an error
            when training flips (``augment.flip_prob > 0``), and give the identity with
            ``flip_map_source`` None otherwise.
        oks_sigmas: per-part OKS sigmas; None: the category's ``oks_sigmas`` field, else COCO's
            for 17 parts, else 0.0625 per part (with a warning).
        augment: augmentation ranges.
        skip_unreadable: skip (log, count) missing/unreadable images instead of raising.
        filter_empty: see ``train``.
        seed: seed of the augmentation stream (DataLoader workers reseed it).
        sparse_targets: samples hold the sparse targets (``build_targets(..., sparse=True)``)
            instead of the dense maps.

    Attributes:
        coco: the pycocotools ``COCO`` object; ``part_names``, ``skeleton`` (0-based pairs),
        ``flip_map`` and ``oks_sigmas`` (numpy arrays), ``flip_map_source`` (where the flip
        map came from: "argument", "category", "names", or None when nothing gave one),
        ``category_id``, ``ids`` (image ids).
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], *,
                 train: bool = False, input_size: int = 512, output_size: int = 128,
                 sigma: float = 2.0, max_instances: int = 30, tag_per_class: bool = True,
                 flip_map: Sequence[int] | None = None,
                 oks_sigmas: Sequence[float] | None = None,
                 augment: AugmentConfig | None = None, skip_unreadable: bool = False,
                 filter_empty: bool = True, seed: int = 0, sparse_targets: bool = False) -> None:
        super().__init__(json_path, image_dir, train=train, input_size=input_size,
                         output_size=output_size, sigma=sigma, max_instances=max_instances,
                         tag_per_class=tag_per_class, augment=augment,
                         skip_unreadable=skip_unreadable, seed=seed,
                         sparse_targets=sparse_targets)
        data = load_coco_json(self.json_path)
        path = self.json_path
        cats = [c for c in data["categories"] if c.get("keypoints")]
        _require(bool(cats), path, f"no category has a 'keypoints' field (not a keypoints "
                 f"file; category ids: "
                 f"{', '.join(_id_text(c['id']) for c in data['categories']) or 'none'})")
        cat = cats[0]
        self.category_id = cat["id"]
        self.part_names: list[str] = [str(n) for n in cat["keypoints"]]
        k = len(self.part_names)
        self.skeleton = [(int(a) - 1, int(b) - 1) for a, b in cat.get("skeleton", [])]
        # load_coco_json checked the values and the length (3 per part) of every 'keypoints'.
        for ann in data["annotations"]:
            if ann["category_id"] != self.category_id or ann.get("iscrowd", 0):
                continue
            _require("keypoints" in ann, path, f"annotation id {_id_text(ann['id'])}: missing "
                     f"field 'keypoints' ({3 * k} values for the {k} parts of category "
                     f"{cat['name']!r})")
        self.flip_map = self._resolve_flip_map(flip_map, cat)
        self.oks_sigmas = self._resolve_sigmas(oks_sigmas, cat)
        self.coco = coco_from_dict(data)

        # Per image: people (non-crowd, >= 1 annotated part) and regions ignored by the loss.
        self._people: dict[int, list[dict]] = {}
        self._ignore: dict[int, list[dict]] = {}
        for img_id in self.coco.getImgIds():
            people, ignore = [], []
            for ann in self.coco.imgToAnns.get(img_id, []):
                if ann["category_id"] != self.category_id:
                    continue
                if ann.get("iscrowd", 0):
                    ignore.append(ann)
                elif any(v > 0 for v in ann["keypoints"][2::3]):
                    people.append(ann)
                else:
                    ignore.append(ann)
            self._people[img_id], self._ignore[img_id] = people, ignore
        ids = sorted(self.coco.getImgIds())
        if train and filter_empty:
            ids = [i for i in ids if self._people[i]]
            _require(bool(ids) or not self.coco.imgs, path,
                     f"no image with a person that has an annotated keypoint (visibility > 0) "
                     f"of category {cat['name']!r} among its {len(self.coco.imgs)} images and "
                     f"{len(data['annotations'])} annotations: nothing to train on")
        self.ids = ids
        self._check_usable(skip_unreadable)

    def _resolve_flip_map(self, flip_map: Sequence[int] | None, cat: dict) -> np.ndarray:
        k = len(self.part_names)
        source = "argument flip_map"
        self.flip_map_source: str | None = "argument"
        if flip_map is None and cat.get("flip_map") is not None:
            flip_map = cat["flip_map"]
            source = f"{self.json_path}: category id {_id_text(cat['id'])}: field 'flip_map'"
            self.flip_map_source = "category"
        if flip_map is None:
            where = f"{self.json_path}: category id {_id_text(cat['id'])}"
            try:
                derived = derive_flip_map(self.part_names)
            except FlipMapError as exc:
                raise DataFormatError(f"{where}: {exc}") from None
            if derived is not None:
                self.flip_map_source = "names"
                return np.asarray(derived, dtype=np.int64)
            if self.train and self.augment.flip_prob > 0:
                raise DataFormatError(str(missing_flip_map_error(self.part_names, where)))
            self.flip_map_source = None  # no flip happens here; the identity is never used
            return np.arange(k, dtype=np.int64)
        fm = np.asarray(flip_map, dtype=np.int64)
        if fm.shape != (k,) or sorted(fm.tolist()) != list(range(k)):
            raise DataFormatError(f"{source}: expected a permutation of 0..{k - 1}, "
                                  f"got {list(flip_map)}")
        return fm

    def _resolve_sigmas(self, sigmas: Sequence[float] | None, cat: dict) -> np.ndarray:
        k = len(self.part_names)
        source = "argument oks_sigmas"
        if sigmas is None and cat.get("oks_sigmas") is not None:
            sigmas = cat["oks_sigmas"]
            source = f"{self.json_path}: category id {_id_text(cat['id'])}: field 'oks_sigmas'"
        if sigmas is None:
            if k == 17:
                return np.asarray(COCO_OKS_SIGMAS, dtype=np.float64)
            log.warning("%s: no OKS sigmas for %d parts (data.oks_sigmas); using 0.0625 each",
                        self.json_path, k)
            return np.full(k, 0.0625)
        out = np.asarray(sigmas, dtype=np.float64)
        if out.shape != (k,) or not (np.isfinite(out) & (out > 0)).all():
            raise DataFormatError(f"{source}: expected {k} positive values, got {list(sigmas)}")
        return out

    @property
    def num_parts(self) -> int:
        return len(self.part_names)

    def keypoints(self, img_id: int) -> np.ndarray:
        """Annotated keypoints of the people of ``img_id`` in original pixels, (N, K, 3)."""
        people = self._people[img_id]
        if not people:
            return np.zeros((0, self.num_parts, 3))
        return np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(
            len(people), self.num_parts, 3)

    def _targets(self, img_id: int, m_out: np.ndarray, flip: bool, with_mask: bool
                 ) -> tuple[dict[str, np.ndarray], TargetStats, dict[str, int], dict[str, Any]]:
        kps = self.keypoints(img_id)
        parts = np.concatenate([apply_affine(kps[..., :2], m_out), kps[..., 2:]], axis=-1)
        parts = parts[:, flip_permutation(self.flip_map, flip)]
        mask = self._loss_mask(self._ignore[img_id], img_id, m_out) if with_mask else None
        size = (self.output_size, self.output_size)
        targets, stats = build_targets(parts, size, sigma=self.sigma,
                                       max_instances=self.max_instances,
                                       tag_per_class=self.tag_per_class, mask=mask,
                                       sparse=self.sparse_targets)
        meta = {"keypoints": parts, "ann_ids": [a["id"] for a in self._people[img_id]]}
        return targets, stats, {}, meta
