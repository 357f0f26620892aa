"""MPII Human Pose: the 16 joints, the annotation readers and the single-person dataset
(docs/design.md §5).

Two annotation formats are read into one :class:`MpiiAnnotations` (one row per person):

* the hourglass code's ``annot/{train,valid,test}.h5`` (pose-hg-train, pytorch_stacked_hourglass;
  needs h5py): per person ``imgname``, ``center`` (x, y), ``scale`` (person height / 200 px),
  ``part`` (16 × (x, y) in image pixels, (0, 0) when the joint is not annotated), ``visible``
  (16), ``normalize`` (the head-size normaliser of PCKh) and, when present, ``index`` (0-based
  row of the .mat's ``annolist``) and ``person`` (0-based ``annorect``);
* the official ``mpii_human_pose_v1_u12_1.mat`` (``scipy.io.loadmat``): ``RELEASE.annolist(i)``
  with ``image.name`` and ``annorect(j)`` (head box ``x1, y1, x2, y2``, ``objpos.x/y``,
  ``scale``, ``annopoints.point(k)`` with ``id`` 0…15, ``x``, ``y``, ``is_visible``),
  ``RELEASE.img_train(i)`` (1 train, 0 test) and ``RELEASE.single_person{i}`` (1-based rect
  ids). It is converted as the hourglass code converts it (``convert_annot.py``): centre
  ``objpos + (0, 15·scale)``, scale ``1.25·scale`` (so that the crop keeps the feet), joints as
  integers, a missing ``is_visible`` read as 1, ``normalize = 0.6 · ‖(x2 − x1, y2 − y1)‖`` of
  the head box (the official evaluation's ``SC_BIAS``).

:class:`MpiiDataset` crops each person as the hourglass code does: the ``200 · scale`` px square
around the centre fills the network input (:func:`aehg.data.transforms.crop_matrix`), with the
paper's augmentation (rotation ±30°, scale 0.75–1.25, flip with the left/right swap). Every
annotated joint, visible or occluded, gets its Gaussian (``build_targets`` with one instance).

Example:
    >>> ann = load_mpii("annot/valid.h5")
    >>> ds = MpiiDataset(ann, "images", input_size=256, output_size=64, sigma=1.0)
    >>> sample = ds[0]
    >>> sample["image"].shape, sample["heatmaps"].shape
    (torch.Size([3, 256, 256]), torch.Size([16, 64, 64]))
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from aehg.config import AugmentConfig
from aehg.data.coco import (
    CocoBase,
    DataFormatError,
    UnreadableImageError,
    coco_from_dict,
    truncated_image,
)
from aehg.data.targets import TargetStats, build_targets
from aehg.data.transforms import (
    AffineParams,
    apply_affine,
    compose,
    crop_matrix,
    flip_permutation,
    to_network_input,
    warp_image,
)
from aehg.io import atomic_write

__all__ = [
    "MPII_FLIP_MAP",
    "MPII_JOINT_NAMES",
    "MPII_SKELETON",
    "MpiiAnnotations",
    "MpiiDataset",
    "load_mpii",
    "mpii_category",
    "read_mpii_h5",
    "read_mpii_mat",
    "require_h5py",
    "write_mpii_h5",
]

log = logging.getLogger(__name__)

# MPII's joint order (the .mat's point ids 0…15 and the h5's ``part`` rows).
MPII_JOINT_NAMES: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
    "l_wrist",
)
# Joint c of a horizontally flipped image is joint MPII_FLIP_MAP[c] (the hourglass code's
# flipped_parts).
MPII_FLIP_MAP: tuple[int, ...] = (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)
# 0-based bones to draw: legs to the pelvis, spine to the head, arms to the upper neck.
MPII_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (8, 12), (12, 11), (11, 10), (8, 13), (13, 14), (14, 15),
)
NUM_JOINTS = len(MPII_JOINT_NAMES)
# The datasets every hourglass-code annotation h5 has (``index`` and ``person`` are optional).
H5_FIELDS = ("imgname", "center", "scale", "part", "visible", "normalize")


def mpii_category() -> dict[str, Any]:
    """The MPII joints as a COCO keypoint category (1-based skeleton, 0-based ``flip_map``)."""
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(MPII_JOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in MPII_SKELETON],
            "flip_map": list(MPII_FLIP_MAP)}


def require_h5py() -> Any:
    """The ``h5py`` module, or an ImportError that says how to install it."""
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is in the dev extra
        raise ImportError("reading or writing the hourglass code's MPII h5 files needs h5py: "
                          "pip install -e '.[sgb]' (or pip install h5py)") from exc
    return h5py


# --------------------------------------------------------------------------- annotations


@dataclass
class MpiiAnnotations:
    """MPII people, one row each, in original image pixels.

    Attributes:
        path: the file they were read from (named in messages).
        imgname: image file name per row.
        center: person centre (x, y).
        scale: person scale (the crop is the ``200 · scale`` px square around ``center``).
        part: joint x, y; (0, 0) for a joint that is not annotated.
        visible: 1 for a visible joint, 0 for an occluded or missing one.
        normalize: the PCKh normaliser (head size), -1 when unknown (test people).
        index: 0-based ``annolist`` row of the .mat, -1 when unknown.
        person: 0-based ``annorect`` of that row, -1 when unknown.
        single: the person is in the .mat's ``single_person`` list (False when unknown).

    Shapes:
        center: (N, 2); scale, normalize, index, person, single: (N,); part: (N, 16, 2);
        visible: (N, 16)
    """

    path: Path
    imgname: list[str]
    center: np.ndarray
    scale: np.ndarray
    part: np.ndarray
    visible: np.ndarray
    normalize: np.ndarray
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    person: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    single: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        n = len(self.imgname)
        for name, default in (("index", -1), ("person", -1), ("single", False)):
            if len(getattr(self, name)) == 0 and n:
                setattr(self, name, np.full(n, default, dtype=type(default)))

    def __len__(self) -> int:
        return len(self.imgname)

    @property
    def annotated(self) -> np.ndarray:
        """(N, 16) bool: the joint has coordinates (the files store (0, 0) for none)."""
        return (self.part != 0).any(axis=-1)

    def subset(self, rows: np.ndarray | Sequence[int]) -> MpiiAnnotations:
        """The given rows (an index array or a boolean mask), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "path":
                out[f.name] = value
            elif f.name == "imgname":
                out[f.name] = [value[int(i)] for i in rows]
            else:
                out[f.name] = value[rows]
        return MpiiAnnotations(**out)


def _fail(path: Path, msg: str) -> DataFormatError:
    return DataFormatError(f"{path}: {msg}")


def _names(raw: np.ndarray, path: Path) -> list[str]:
    """``imgname`` as strings: byte strings, or rows of character codes (zero-padded, the
    older annot.h5 layout)."""
    if raw.dtype.kind in ("S", "O", "U"):
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw.reshape(-1)]
    if raw.dtype.kind in ("i", "u") and raw.ndim == 2:
        return [bytes(int(c) for c in row if c).decode("utf-8") for row in raw]
    raise _fail(path, f"dataset 'imgname': expected image file names (strings, or rows of "
                      f"character codes), got dtype {raw.dtype} shape {raw.shape}")


def _check_annotations(ann: MpiiAnnotations, where: str) -> MpiiAnnotations:
    """Shapes and values of every row; errors name the file, the field and the row."""
    path = ann.path
    n = len(ann.imgname)
    want = {"center": (n, 2), "scale": (n,), "part": (n, NUM_JOINTS, 2),
            "visible": (n, NUM_JOINTS), "normalize": (n,)}
    for name, shape in want.items():
        value = getattr(ann, name)
        if value.shape != shape:
            joints = (f" (the {NUM_JOINTS} MPII joints: {', '.join(MPII_JOINT_NAMES)})"
                      if name in ("part", "visible") else "")
            want_shape = ", ".join(["N", *(str(v) for v in shape[1:])])
            raise _fail(path, f"{where} {name!r}: expected shape ({want_shape}) with N = {n} "
                              f"people{joints}, got {value.shape}")
        if not np.isfinite(value).all():
            row = int(np.flatnonzero(~np.isfinite(value.reshape(n, -1)).all(axis=1))[0])
            raise _fail(path, f"row {row} (image {ann.imgname[row]!r}): {where} {name!r} is "
                              f"not finite: {value[row].tolist()}")
    bad = np.flatnonzero(ann.scale <= 0)
    if bad.size:
        row = int(bad[0])
        raise _fail(path, f"row {row} (image {ann.imgname[row]!r}): {where} 'scale' must be > 0 "
                          f"(person height / 200 px), got {ann.scale[row]}")
    return ann


def read_mpii_h5(path: str | os.PathLike[str]) -> MpiiAnnotations:
    """Read the hourglass code's annotation h5 (``annot/train.h5``, ``valid.h5``, …).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not an HDF5 file, a missing dataset, a shape other than N × 16 joints,
            a non-finite value or a scale <= 0; the message names the file, the dataset and
            the row.
        ImportError: h5py is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {path}")
    h5py = require_h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _fail(path, f"not an HDF5 file ({exc})") from None
    with f:
        missing = [k for k in H5_FIELDS if k not in f]
        if missing:
            raise _fail(path, f"missing dataset {missing[0]!r} (the hourglass code's MPII "
                              f"annotation h5 has {', '.join(H5_FIELDS)}; found "
                              f"{', '.join(sorted(f.keys())) or 'nothing'})")
        data = {k: f[k][()] for k in (*H5_FIELDS, "index", "person") if k in f}
    names = _names(np.asarray(data["imgname"]), path)
    ann = MpiiAnnotations(
        path, names, np.asarray(data["center"], np.float64),
        np.asarray(data["scale"], np.float64).reshape(-1),
        np.asarray(data["part"], np.float64), np.asarray(data["visible"], np.float64),
        np.asarray(data["normalize"], np.float64).reshape(-1),
        np.asarray(data.get("index", np.zeros(0)), np.int64).reshape(-1),
        np.asarray(data.get("person", np.zeros(0)), np.int64).reshape(-1))
    for name in ("index", "person"):
        if len(getattr(ann, name)) != len(names):
            raise _fail(path, f"dataset {name!r}: expected {len(names)} rows (one per "
                              f"imgname), got {len(getattr(ann, name))}")
    return _check_annotations(ann, "dataset")


def write_mpii_h5(path: str | os.PathLike[str], ann: MpiiAnnotations) -> Path:
    """Write annotations in the hourglass code's h5 layout, atomically (needs h5py)."""
    h5py = require_h5py()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["name"] = "mpii"
        f["imgname"] = np.array([n.encode("utf-8") for n in ann.imgname], dtype="S")
        for name in ("center", "scale", "part", "visible", "normalize", "index", "person"):
            f[name] = getattr(ann, name)
    return atomic_write(path, lambda out: out.write(buf.getvalue()))


def _items(x: Any) -> list[Any]:
    """A loadmat (squeeze_me) value as a list: an array of structs, one struct, or nothing."""
    if isinstance(x, np.ndarray):
        return list(x.reshape(-1))
    return [x]


def _empty(x: Any) -> bool:
    return x is None or (isinstance(x, np.ndarray) and x.size == 0)


def _number(x: Any, where: str, path: Path) -> float:
    """A numeric .mat field (a number, a 1-element array, or a digit string)."""
    if isinstance(x, np.ndarray) and x.size == 1:
        x = x.reshape(-1)[0]
    if isinstance(x, (str, bytes)):
        try:
            return float(x)
        except ValueError:
            pass
    elif isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
        return float(x)
    raise _fail(path, f"{where}: expected a number, got {x!r}")


def read_mpii_mat(path: str | os.PathLike[str]) -> tuple[MpiiAnnotations, np.ndarray]:
    """Read the official ``mpii_human_pose_v1_u12_1.mat`` as the hourglass code converts it.

    Every person with ``objpos`` and ``scale`` becomes a row (people without them cannot be
    cropped and are left out, as in the hourglass code).

    Returns:
        ``(annotations, train)``: the rows and, per row, True when it belongs to the training
        images as the hourglass code defines them (``img_train`` = 1 and the image's
        ``annorect`` has the ``annopoints`` field); test people have no joints.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not a .mat file, no ``RELEASE`` variable, a missing field
            (``annolist``, ``img_train``, ``image.name``, a point's ``id``/``x``/``y``), a joint
            id outside 0…15, or a non-numeric value; the message names the file and the field
            as ``annolist(i).annorect(j)…`` (1-based, as MATLAB writes it).
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {path}")
    try:
        mat = loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as exc:  # scipy raises several types for a file that is not a .mat
        raise _fail(path, f"not a MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    if "RELEASE" not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise _fail(path, f"missing variable 'RELEASE' (the MPII annotation struct; found "
                          f"{found})")
    rel = mat["RELEASE"]
    for name in ("annolist", "img_train"):
        if not hasattr(rel, name):
            raise _fail(path, f"RELEASE: missing field {name!r}")
    annolist = _items(rel.annolist)
    img_train = np.atleast_1d(np.asarray(rel.img_train)).reshape(-1)
    if len(img_train) != len(annolist):
        raise _fail(path, f"RELEASE.img_train: expected {len(annolist)} entries (one per "
                          f"annolist image), got {len(img_train)}")
    singles = _items(getattr(rel, "single_person", np.zeros(0)))
    rows: dict[str, list[Any]] = {k: [] for k in ("imgname", "center", "scale", "part", "visible",
                                                   "normalize", "index", "person", "single")}
    train: list[bool] = []
    for i, image in enumerate(annolist):
        where_i = f"annolist({i + 1})"
        if not hasattr(image, "image") or not hasattr(image.image, "name"):
            raise _fail(path, f"{where_i}: missing field 'image.name'")
        name = str(image.image.name)
        rects = [] if _empty(getattr(image, "annorect", None)) else _items(image.annorect)
        has_points = bool(rects) and hasattr(rects[0], "annopoints")
        is_train = bool(_number(img_train[i], f"RELEASE.img_train({i + 1})", path)) and has_points
        single_ids = set()
        if i < len(singles) and not _empty(singles[i]):
            single_ids = {int(_number(v, f"RELEASE.single_person{{{i + 1}}}", path))
                          for v in _items(singles[i])}
        for j, rect in enumerate(rects):
            where = f"{where_i}.annorect({j + 1})"
            pos, scale = getattr(rect, "objpos", None), getattr(rect, "scale", None)
            if _empty(pos) or _empty(scale) or not hasattr(pos, "x"):
                continue  # no centre and scale: nothing to crop (the hourglass code skips it)
            s = _number(scale, f"{where}.scale", path)
            cx = _number(pos.x, f"{where}.objpos.x", path)
            cy = _number(pos.y, f"{where}.objpos.y", path)
            part = np.zeros((NUM_JOINTS, 2))
            vis = np.zeros(NUM_JOINTS)
            points = getattr(rect, "annopoints", None)
            if not _empty(points) and not _empty(getattr(points, "point", None)):
                for k, pt in enumerate(_items(points.point)):
                    wp = f"{where}.annopoints.point({k + 1})"
                    for key in ("id", "x", "y"):
                        if not hasattr(pt, key):
                            raise _fail(path, f"{wp}: missing field {key!r}")
                    jid = _number(pt.id, f"{wp}.id", path)
                    if jid != int(jid) or not 0 <= jid < NUM_JOINTS:
                        raise _fail(path, f"{wp}.id: expected a joint id 0…{NUM_JOINTS - 1} "
                                          f"(the {NUM_JOINTS} MPII joints), got {pt.id!r}")
                    jid = int(jid)
                    # Integers, as the hourglass code stores them.
                    part[jid] = (int(_number(pt.x, f"{wp}.x", path)),
                                 int(_number(pt.y, f"{wp}.y", path)))
                    v = getattr(pt, "is_visible", None)
                    vis[jid] = 1.0 if _empty(v) else _number(v, f"{wp}.is_visible", path)
            norm = -1.0
            if all(hasattr(rect, k) and not _empty(getattr(rect, k))
                   for k in ("x1", "y1", "x2", "y2")):
                x1, y1, x2, y2 = (int(_number(getattr(rect, k), f"{where}.{k}", path))
                                  for k in ("x1", "y1", "x2", "y2"))
                norm = 0.6 * math.hypot(x2 - x1, y2 - y1)
            rows["imgname"].append(name)
            rows["center"].append((cx, cy + 15.0 * s))
            rows["scale"].append(1.25 * s)
            rows["part"].append(part)
            rows["visible"].append(vis)
            rows["normalize"].append(norm)
            rows["index"].append(i)
            rows["person"].append(j)
            rows["single"].append(j + 1 in single_ids)
            train.append(is_train)
    n = len(rows["imgname"])
    ann = MpiiAnnotations(
        path, rows["imgname"], np.asarray(rows["center"], np.float64).reshape(n, 2),
        np.asarray(rows["scale"], np.float64), np.asarray(rows["part"]).reshape(n, NUM_JOINTS, 2),
        np.asarray(rows["visible"]).reshape(n, NUM_JOINTS), np.asarray(rows["normalize"]),
        np.asarray(rows["index"], np.int64), np.asarray(rows["person"], np.int64),
        np.asarray(rows["single"], bool))
    return _check_annotations(ann, "field"), np.asarray(train, bool)


def load_mpii(path: str | os.PathLike[str], split: str = "all",
              exclude: MpiiAnnotations | None = None) -> MpiiAnnotations:
    """MPII people from an hourglass-code h5 (all its rows) or the official .mat.

    Args:
        path: ``*.h5`` / ``*.hdf5`` or ``*.mat``.
        split: for a .mat: "train" (the training people that have an annotated joint), "test"
            (the test people: centre and scale, no joints) or "all". An h5 is one split already
            and takes "all" (any other value is refused).
        exclude: people to leave out, matched by (``index``, ``person``): give the hourglass
            code's ``valid.h5`` to train on the .mat without the standard validation people.

    Raises:
        ValueError: an unknown suffix or split, or ``exclude`` without ``index``/``person``.
        DataFormatError, FileNotFoundError, ImportError: see the readers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if split not in ("all", "train", "test"):
        raise ValueError(f"split: expected 'all', 'train' or 'test', got {split!r}")
    if suffix in (".h5", ".hdf5"):
        if split != "all":
            raise ValueError(f"{path}: an h5 annotation file is one split already (the hourglass "
                             f"code's train.h5 / valid.h5 / test.h5); split {split!r} applies to "
                             f"the .mat")
        ann = read_mpii_h5(path)
    elif suffix == ".mat":
        ann, train = read_mpii_mat(path)
        if split == "train":
            ann = ann.subset(train & ann.annotated.any(axis=1))
        elif split == "test":
            ann = ann.subset(~train)
    else:
        raise ValueError(f"{path}: expected MPII annotations as the hourglass code's .h5 or the "
                         f"official .mat, got a {suffix or 'suffix-less'} file")
    if exclude is not None and len(exclude):
        if (exclude.index < 0).any() or (exclude.person < 0).any():
            raise ValueError(f"{exclude.path}: has no 'index' / 'person' rows to tell which "
                             f"people of {path} to leave out")
        drop = set(zip(exclude.index.tolist(), exclude.person.tolist(), strict=True))
        keep = [r for r in range(len(ann))
                if (int(ann.index[r]), int(ann.person[r])) not in drop]
        ann = ann.subset(np.asarray(keep, dtype=np.int64))
    return ann


# --------------------------------------------------------------------------- dataset


class MpiiDataset(CocoBase):
    """Single-person samples: each MPII person cropped around its centre and scale.

    The "image ids" are the annotation rows (0…N−1); ``coco.imgs[row]`` holds the row's
    ``file_name`` so that the evaluation and skipping machinery of the COCO datasets applies
    unchanged.

    Args:
        annotations: rows from :func:`load_mpii` (or a path it reads with split "all").
        image_dir: folder the ``imgname`` are relative to.
        train: random augmentation (else none) and only people with an annotated joint.
        input_size, output_size: square network input / output-map sides (256 / 64 in the
            paper).
        sigma: Gaussian of the targets in output pixels (1 for 64 × 64 maps in the hourglass
            code).
        flip_map: joint c of a flipped crop is joint ``flip_map[c]`` (default MPII's).
        augment: augmentation ranges.
        skip_unreadable: skip (log, count) missing/unreadable images instead of raising.
        seed: seed of the augmentation stream.
        sparse_targets: samples hold the sparse targets (``build_targets(..., sparse=True)``)
            instead of the dense maps.

    Raises:
        DataFormatError: no person to use, or a flip map that is not a permutation of 0…15.
    """

    def __init__(self, annotations: MpiiAnnotations | str | os.PathLike[str],
                 image_dir: str | os.PathLike[str], *, train: bool = False,
                 input_size: int = 256, output_size: int = 64, sigma: float = 1.0,
                 flip_map: Sequence[int] | None = None, augment: AugmentConfig | None = None,
                 skip_unreadable: bool = False, seed: int = 0,
                 sparse_targets: bool = False) -> None:
        ann = annotations if isinstance(annotations, MpiiAnnotations) else \
            load_mpii(annotations)
        super().__init__(ann.path, image_dir, train=train, input_size=input_size,
                         output_size=output_size, sigma=sigma, max_instances=1,
                         tag_per_class=True, augment=augment, skip_unreadable=skip_unreadable,
                         seed=seed, sparse_targets=sparse_targets)
        if train:
            ann = ann.subset(ann.annotated.any(axis=1))
        if not len(ann):
            which = "with an annotated joint " if train else ""
            raise DataFormatError(f"{ann.path}: no person {which}in the file: nothing to "
                                  f"{'train on' if train else 'evaluate'}")
        self.annotations = ann
        self.part_names = list(MPII_JOINT_NAMES)
        self.skeleton = list(MPII_SKELETON)
        fm = np.asarray(MPII_FLIP_MAP if flip_map is None else flip_map, dtype=np.int64)
        if fm.shape != (NUM_JOINTS,) or sorted(fm.tolist()) != list(range(NUM_JOINTS)):
            raise DataFormatError(f"argument flip_map: expected a permutation of "
                                  f"0..{NUM_JOINTS - 1}, got {list(fm.reshape(-1))}")
        self.flip_map = fm
        self.flip_map_source = "argument" if flip_map is not None else "category"
        self.category_id = 1
        images = [{"id": r, "file_name": name, "width": 0, "height": 0}
                  for r, name in enumerate(ann.imgname)]
        self.coco = coco_from_dict({"images": images, "annotations": [],
                                    "categories": [mpii_category()]})
        self.ids = list(range(len(ann)))
        self._check_usable(skip_unreadable)

    @property
    def num_parts(self) -> int:
        return NUM_JOINTS

    def read_image(self, img_id: Any) -> np.ndarray:
        """The BGR image of row ``img_id``; raises naming the file, the row and the annotations.

        Raises:
            FileNotFoundError: no such file.
            UnreadableImageError: undecodable or truncated.
        """
        name = self.annotations.imgname[img_id]
        path = self.image_dir / name
        where = f"row {img_id} of {self.json_path}"
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} ({where})")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UnreadableImageError(f"cannot decode image file {path} ({where})")
        problem = truncated_image(path)
        if problem is not None:
            raise UnreadableImageError(f"image file {path} is truncated ({problem}; {where})")
        return image

    def person(self, img_id: int) -> tuple[np.ndarray, float]:
        """``(center, scale)`` of row ``img_id``: what a crop of its picture needs."""
        return self.annotations.center[img_id].copy(), float(self.annotations.scale[img_id])

    def crop(self, img_id: int, params: AffineParams | None = None) -> np.ndarray:
        """The 2×3 affine from the picture of row ``img_id`` to network input pixels."""
        ann = self.annotations
        return crop_matrix(ann.center[img_id], float(ann.scale[img_id]), self.input_size,
                           params)

    def _sample(self, img_id: int, image: np.ndarray, params: AffineParams | None,
                rng: np.random.Generator) -> dict[str, Any]:
        params = self._params(params, rng)
        h, w = image.shape[:2]
        m_in = self.crop(img_id, params)
        m_out = compose(self._in_to_out, m_in)
        warped = warp_image(image, m_in, self.input_size)
        tensor = to_network_input(warped, rng, self.augment.color_jitter if self.train
                                  else 0.0)
        targets, stats, parts = self._person_targets(img_id, m_out, params.flip)
        self._running = self._running + stats
        ann = self.annotations
        sample: dict[str, Any] = {"image": torch.from_numpy(tensor)}
        sample.update({k: torch.from_numpy(v) for k, v in targets.items()})
        sample["meta"] = {
            "image_id": img_id, "file_name": ann.imgname[img_id], "orig_size": (h, w),
            "input_transform": m_in, "transform": m_out, "flipped": params.flip,
            "stats": stats.as_dict(), "keypoints": parts,
            "center": ann.center[img_id].copy(), "scale": float(ann.scale[img_id]),
        }
        return sample

    def _person_targets(self, img_id: int, m_out: np.ndarray, flip: bool
                        ) -> tuple[dict[str, np.ndarray], TargetStats, np.ndarray]:
        """Targets of one person: annotated joints (visible 2, occluded 1) in output pixels."""
        ann = self.annotations
        annotated = ann.annotated[img_id]
        v = np.where(annotated, np.where(ann.visible[img_id] > 0, 2.0, 1.0), 0.0)
        parts = np.concatenate([apply_affine(ann.part[img_id], m_out), v[:, None]], axis=1)
        parts = parts[None, flip_permutation(self.flip_map, flip)]
        size = (self.output_size, self.output_size)
        targets, stats = build_targets(parts, size, sigma=self.sigma, max_instances=1,
                                       tag_per_class=True, sparse=self.sparse_targets)
        return targets, stats, parts

    @property
    def stats(self) -> dict[str, int]:
        """Target statistics at validation geometry (the crop without augmentation), from the
        annotations only, plus ``images`` (people) and ``skipped_images``."""
        if self._stats is None:
            total = TargetStats()
            for row in self.ids:
                m_out = compose(self._in_to_out, self.crop(row))
                total = total + self._person_targets(row, m_out, False)[1]
            self._stats = {**total.as_dict(), "images": len(self.ids)}
        return {**self._stats, "skipped_images": len(self.skipped)}
