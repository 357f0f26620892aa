"""Scene-Graph-Benchmark's preprocessed Visual Genome → the relation format (docs/design.md §5).

Scene-Graph-Benchmark.pytorch (SGB) trains and evaluates on three files: ``VG-SGG-with-attri.h5``
(boxes, labels, relations and the official split), ``VG-SGG-dicts-with-attri.json`` (the VG150
vocabulary) and ``image_data.json`` (image ids and sizes). :func:`convert_sgb` turns them into
aehg's relation format (what :class:`aehg.data.RelationDataset` reads), one file per split, with
the semantics of SGB's ``VGDataset`` / ``load_graphs`` / ``load_image_filenames``:

* **h5 layout** (written by scene-graph-TF-release ``vg_to_roidb.py``): per image (I rows)
  ``split``, ``img_to_first_box``, ``img_to_last_box``, ``img_to_first_rel``,
  ``img_to_last_rel`` (inclusive ranges, −1 when the image has none); per box (B rows)
  ``labels`` (B, 1) and ``boxes_1024`` / ``boxes_512`` (B, 4); per relation (R rows)
  ``relationships`` (R, 2) (subject, object as *global* box rows) and ``predicates`` (R, 1).
  Labels and predicates are 1-based (0 is SGB's background) and become the category and
  predicate ids unchanged.
* **Boxes** are stored as integer centre, width, height at ``BOX_SCALE`` (the long image side
  scaled to 1024). As SGB does, the corner is ``x1 = x_c − w/2`` truncated to an integer (SGB
  assigns the float into the integer array), ``x2 = x1 + w``; then
  ``box / BOX_SCALE · max(width, height)`` with the size from ``image_data.json``, and the box
  is clipped to ``[0, width − 1] × [0, height − 1]`` (SGB's ``clip_to_image``).
* **Images**: ``image_data.json`` minus SGB's four corrupted images (1592, 1722, 4616, 4617)
  lines up with the h5 rows (108,073 in the released files); with ``image_dir`` an entry whose
  ``<image_id>.jpg`` is missing is skipped too, as SGB does. The ``file_name`` is
  ``<image_id>.jpg``: SGB keeps every VG image in one folder (``VG_100K``). Its sizes are used
  as they are (SGB warns that a few are wrong and leaves fixing them to the user).
* **Split**: ``split == 0`` is train, ``2`` is test. Images without boxes are always dropped;
  with ``filter_empty_rels`` images without relations too. Of the remaining train images (the
  first ``num_im`` when ``num_im > −1``) the first ``num_val`` form the validation set and the
  rest the training set.
* **Training-only filters** (SGB applies them to ``split == "train"`` only):
  ``filter_non_overlap`` keeps relations whose boxes overlap (IoU > 0 with the "+1 pixel"
  convention, at BOX_SCALE) and drops images left without one; ``filter_duplicate_rels`` keeps
  one predicate per ordered (subject, object) pair, drawn uniformly from the pair's entries;
  boxes that are empty after clipping are dropped with their relations (SGB's
  ``clip_to_image(remove_empty=True)`` while training). Validation and test keep every box and
  every relation, duplicates included, as SGB's evaluation ground truth does.

Deviations, each because a file cannot do what SGB's loader does on the fly: SGB redraws the
duplicate choice every time it loads a training image; here it is drawn once, from
``numpy.random.default_rng([seed, h5 row])`` (so it is reproducible and independent of the
other images). ``num_val = 0`` gives an empty validation set (SGB would return the whole
training set as validation).

The **training triplet set** (subject category id, predicate id, object category id) of the
training split, before the duplicate draw (SGB's loader sees every entry over the epochs), is
saved as ``train_triplets.json``: ground-truth triplets outside it are the zero-shot ones of
``zR@K`` (:func:`load_train_triplets` gives them as class indices for
:func:`aehg.evaluation.scene_graph.evaluate`).

Example:
    >>> report = convert_sgb("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json",
    ...                      "image_data.json", "data/vg_sgb")
    >>> report["train_images"], report["val_images"], report["test_images"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aehg.data.coco import DataFormatError
from aehg.data.visual_genome import load_vg150_vocabulary
from aehg.io import read_json, write_json

__all__ = [
    "BOX_SCALE",
    "CORRUPTED_IMAGES",
    "SPLIT_FILES",
    "TRAIN_TRIPLETS_FILE",
    "SgbData",
    "SgbH5",
    "convert_sgb",
    "load_sgb",
    "load_sgb_h5",
    "load_sgb_image_data",
    "load_train_triplets",
    "training_triplets",
    "write_train_triplets",
]

BOX_SCALE = 1024
# SGB's load_image_filenames skips these image_data.json entries (basenames <image_id>.jpg).
CORRUPTED_IMAGES = ("1592.jpg", "1722.jpg", "4616.jpg", "4617.jpg")
SPLIT_TRAIN, SPLIT_TEST = 0, 2
SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
TRAIN_TRIPLETS_FILE = "train_triplets.json"
TRIPLET_COLUMNS = ("subject_category_id", "predicate_id", "object_category_id")
_PER_IMAGE = ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel",
              "img_to_last_rel")


def _require_h5py():
    try:
        import h5py
    except ImportError as exc:  # an optional extra: say how to get it
        raise ImportError("reading SGB's h5 file needs h5py: pip install -e '.[sgb]' "
                          "(or pip install h5py)") from exc
    return h5py


@dataclass
class SgbH5:
    """The checked arrays of an SGB h5 file (boxes already as SGB's integer-derived corners).

    Shapes:
        split, first_box, last_box, first_rel, last_rel: (I,) int64
        labels: (B,) int64; boxes: (B, 4) float64 x1, y1, x2, y2 at ``box_scale``
        relationships: (R, 2) int64 global box rows; predicates: (R,) int64
    """

    path: Path
    box_scale: int
    split: np.ndarray
    first_box: np.ndarray
    last_box: np.ndarray
    first_rel: np.ndarray
    last_rel: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    relationships: np.ndarray
    predicates: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.split)


def _column(arr: np.ndarray, path: Path, name: str, rows: int | None) -> np.ndarray:
    """(N,) or (N, 1) → (N,) int64, with the expected row count."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or (rows is not None and len(arr) != rows):
        want = f"({rows},)" if rows is not None else "(N,) or (N, 1)"
        raise DataFormatError(f"{path}: dataset {name!r}: expected shape {want}, got "
                              f"{arr.shape}")
    return arr.astype(np.int64)


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if len(bad) else None


def load_sgb_h5(h5_path: str | os.PathLike[str], box_scale: int = BOX_SCALE) -> SgbH5:
    """Read and check SGB's ``VG-SGG-with-attri.h5`` (docs/design.md §5).

    Every check covers the whole file, not only the images a split uses, so a broken file is
    reported whatever the options.

    Args:
        h5_path: the h5 file.
        box_scale: which boxes to read, ``boxes_{box_scale}`` (1024 or 512 in SGB's file).

    Returns:
        The arrays, boxes converted from centre form to SGB's corners at ``box_scale``.

    Raises:
        FileNotFoundError: no such file.
        ImportError: h5py is not installed.
        DataFormatError: not HDF5, a missing dataset, a wrong shape, a split value other than
            0/2, a non-positive box, or a box / relation range that leaves its array or a
            relation that points outside its image's boxes; the message names the file, the
            dataset and the index.
    """
    path = Path(h5_path)
    if not path.is_file():
        raise FileNotFoundError(f"SGB h5 file not found: {path}")
    h5py = _require_h5py()
    box_name = f"boxes_{int(box_scale)}"
    required = (*_PER_IMAGE, "labels", box_name, "relationships", "predicates")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        missing = [n for n in required if n not in f]
        if missing:
            raise DataFormatError(
                f"{path}: missing dataset(s) {', '.join(repr(m) for m in missing)} (SGB's "
                f"VG-SGG h5 layout has {', '.join(required)})")
        raw = {n: np.asarray(f[n][()]) for n in required}
    split = _column(raw["split"], path, "split", None)
    n_img = len(split)
    per = {n: _column(raw[n], path, n, n_img) for n in _PER_IMAGE[1:]}
    labels = _column(raw["labels"], path, "labels", None)
    n_box = len(labels)
    boxes_raw = raw[box_name]
    if boxes_raw.shape != (n_box, 4):
        raise DataFormatError(f"{path}: dataset {box_name!r}: expected shape ({n_box}, 4) (one "
                              f"row per entry of 'labels'), got {boxes_raw.shape}")
    predicates = _column(raw["predicates"], path, "predicates", None)
    n_rel = len(predicates)
    rels = raw["relationships"]
    if rels.shape != (n_rel, 2):
        raise DataFormatError(f"{path}: dataset 'relationships': expected shape ({n_rel}, 2) "
                              f"(one row per entry of 'predicates'), got {rels.shape}")
    rels = rels.astype(np.int64)

    i = _first_bad((split != SPLIT_TRAIN) & (split != SPLIT_TEST))
    if i is not None:
        extra = " (1 is the preprocessing script's val split, which SGB never reads: not the " \
            "released file)" if split[i] == 1 else ""
        raise DataFormatError(f"{path}: dataset 'split' index {i}: expected 0 (train) or 2 "
                              f"(test), got {split[i]}{extra}")
    b = boxes_raw.astype(np.float64)
    j = _first_bad(~np.isfinite(b).all(axis=1) | (b[:, :2] < 0).any(axis=1)
                   | (b[:, 2:] <= 0).any(axis=1))
    if j is not None:
        raise DataFormatError(f"{path}: dataset {box_name!r} index {j}: expected a centre >= 0 "
                              f"and a width, height > 0 (x_c, y_c, w, h), got "
                              f"{boxes_raw[j].tolist()}")
    # SGB converts in place in the stored (integer) array, so the corner is truncated.
    corner = b[:, :2] - b[:, 2:] / 2
    if np.issubdtype(boxes_raw.dtype, np.integer):
        corner = np.trunc(corner)
    boxes = np.concatenate([corner, corner + b[:, 2:]], axis=1)

    fb, lb, fr, lr = (per[n] for n in _PER_IMAGE[1:])
    has_box, has_rel = fb >= 0, fr >= 0
    i = _first_bad(has_box & ((lb < fb) | (lb >= n_box)))
    if i is not None:
        raise DataFormatError(f"{path}: dataset 'img_to_last_box' index {i}: box range "
                              f"[{fb[i]}, {lb[i]}] (img_to_first_box, img_to_last_box) is "
                              f"empty or leaves the {n_box} rows of 'labels'")
    i = _first_bad(has_rel & ((lr < fr) | (lr >= n_rel)))
    if i is not None:
        raise DataFormatError(f"{path}: dataset 'img_to_last_rel' index {i}: relation range "
                              f"[{fr[i]}, {lr[i]}] (img_to_first_rel, img_to_last_rel) is "
                              f"empty or leaves the {n_rel} rows of 'relationships'")
    i = _first_bad(has_rel & ~has_box)
    if i is not None:
        raise DataFormatError(f"{path}: dataset 'img_to_first_rel' index {i}: the image has "
                              f"relations [{fr[i]}, {lr[i]}] but no boxes (img_to_first_box "
                              f"{fb[i]})")
    # Each relation row against the box range of the image that owns it (vectorised).
    owners = np.flatnonzero(has_rel)
    counts = lr[owners] - fr[owners] + 1
    owner = np.repeat(owners, counts)
    rows = np.repeat(fr[owners], counts) + (np.arange(counts.sum())
                                            - np.repeat(np.cumsum(counts) - counts, counts))
    if len(rows):
        sub = rels[rows]
        outside = (sub < fb[owner, None]) | (sub > lb[owner, None])
        k = _first_bad(outside.any(axis=1))
        if k is not None:
            r, img = int(rows[k]), int(owner[k])
            box = int(sub[k][outside[k]][0])
            raise DataFormatError(
                f"{path}: dataset 'relationships' index {r}: box row {box} lies outside the "
                f"box range [{fb[img]}, {lb[img]}] of image index {img} (img_to_first_box, "
                f"img_to_last_box)")
    return SgbH5(path=path, box_scale=int(box_scale), split=split, first_box=fb, last_box=lb,
                 first_rel=fr, last_rel=lr, labels=labels, boxes=boxes, relationships=rels,
                 predicates=predicates)


def load_sgb_image_data(image_data_path: str | os.PathLike[str],
                        image_dir: str | os.PathLike[str] | None = None
                        ) -> tuple[list[dict[str, Any]], int]:
    """``image_data.json`` as SGB's ``load_image_filenames`` lists it (one entry per h5 row).

    Args:
        image_data_path: Visual Genome's ``image_data.json``.
        image_dir: when given, entries whose ``<image_id>.jpg`` is not in this folder are
            skipped too, as SGB does.

    Returns:
        ``(entries, skipped)``: ``{"image_id", "width", "height"}`` per kept entry, in file
        order, and the number of entries skipped.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not a JSON list, or an entry without ``image_id``/``width``/``height``
            (naming the entry).
    """
    path = Path(image_data_path)
    data = read_json(path, "image data")
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of images, got "
                              f"{type(data).__name__}")
    out, skipped = [], 0
    for i, entry in enumerate(data):
        iid = entry.get("image_id", entry.get("id")) if isinstance(entry, dict) else None
        if iid is None or "width" not in entry or "height" not in entry:
            raise DataFormatError(f"{path}: entry {i}: expected image_id, width and height, "
                                  f"got {entry!r:.80}")
        name = f"{iid}.jpg"
        if name in CORRUPTED_IMAGES or (image_dir is not None
                                        and not os.path.exists(os.path.join(image_dir, name))):
            skipped += 1
            continue
        out.append({"image_id": int(iid), "width": int(entry["width"]),
                    "height": int(entry["height"])})
    return out, skipped


@dataclass
class SgbData:
    """The converted splits (relation-format dicts), the training triplets and the counts."""

    train: dict[str, Any]
    val: dict[str, Any]
    test: dict[str, Any]
    train_triplets: list[tuple[int, int, int]]
    report: dict[str, int] = field(default_factory=dict)

    def splits(self) -> dict[str, dict[str, Any]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _vocabulary(dicts_path: str | os.PathLike[str]) -> tuple[list[dict], list[dict]]:
    """Categories and predicates (1-based, contiguous, as SGB's ``load_info`` needs)."""
    try:
        vocab = load_vg150_vocabulary(dicts_path)
    except ValueError as exc:
        raise DataFormatError(str(exc)) from None
    out = []
    for key, what in (("label_to_idx", "object classes"), ("predicate_to_idx", "predicates")):
        items = sorted(vocab[key].items(), key=lambda kv: kv[1])
        ids = [i for _, i in items]
        if ids != list(range(1, len(ids) + 1)):
            raise DataFormatError(f"{dicts_path}: field {key!r}: expected the indices 1..{len(ids)}"
                                  f" of the {len(ids)} {what} (0 is SGB's background), got "
                                  f"{ids[:5]}…")
        out.append([{"id": i, "name": n} for n, i in items])
    cats = [dict(c, supercategory="object") for c in out[0]]
    return cats, out[1]


def load_sgb(h5_path: str | os.PathLike[str], dicts_path: str | os.PathLike[str],
             image_data_path: str | os.PathLike[str], *, box_scale: int = BOX_SCALE,
             filter_empty_rels: bool = True, filter_duplicate_rels: bool = True,
             filter_non_overlap: bool = False, num_val: int = 5000, num_im: int = -1,
             seed: int = 0, image_dir: str | os.PathLike[str] | None = None) -> SgbData:
    """Read SGB's three files into train / val / test relation-format dicts (nothing written).

    Args:
        h5_path: ``VG-SGG-with-attri.h5``.
        dicts_path: ``VG-SGG-dicts-with-attri.json`` (categories and predicates).
        image_data_path: ``image_data.json`` (image ids and sizes).
        box_scale: the ``boxes_{box_scale}`` dataset to read and its scale (SGB: 1024).
        filter_empty_rels: drop images without relations from every split (SGB: True).
        filter_duplicate_rels: training only: one predicate per ordered pair (SGB: True).
        filter_non_overlap: training only: only relations whose boxes overlap (SGB's configs:
            False, i.e. ``REQUIRE_BOX_OVERLAP: False``).
        num_val: images carved from the start of the training split for validation (5000).
        num_im: use only the first ``num_im`` images of the train (or test) split; −1 = all.
        seed: the duplicate draw of each image uses ``default_rng([seed, h5 row])``.
        image_dir: skip ``image_data.json`` entries without an image file here (SGB does).

    Returns:
        :class:`SgbData` (see the module doc for the semantics).

    Raises:
        FileNotFoundError, ImportError, DataFormatError: as :func:`load_sgb_h5`; also a label
            or predicate outside the vocabulary, and an ``image_data.json`` whose entries (after
            SGB's skips) do not line up one to one with the h5 rows.
    """
    if num_val < 0:
        raise ValueError(f"num_val: expected a number of images >= 0, got {num_val}")
    if num_im < -1:
        raise ValueError(f"num_im: expected -1 (all images) or a number >= 0, got {num_im}")
    cats, preds = _vocabulary(dicts_path)
    h5 = load_sgb_h5(h5_path, box_scale)
    path = h5.path
    j = _first_bad((h5.labels < 1) | (h5.labels > len(cats)))
    if j is not None:
        raise DataFormatError(f"{path}: dataset 'labels' index {j}: expected a class in "
                              f"1..{len(cats)} (the classes of {dicts_path}), got "
                              f"{h5.labels[j]}")
    j = _first_bad((h5.predicates < 1) | (h5.predicates > len(preds)))
    if j is not None:
        raise DataFormatError(f"{path}: dataset 'predicates' index {j}: expected a predicate in "
                              f"1..{len(preds)} (the predicates of {dicts_path}), got "
                              f"{h5.predicates[j]}")
    infos, skipped = load_sgb_image_data(image_data_path, image_dir)
    if len(infos) < h5.num_images:
        raise DataFormatError(
            f"{image_data_path}: {len(infos)} images after skipping SGB's {skipped} (corrupted "
            f"or missing), but {path} dataset 'split' has {h5.num_images}: h5 image index "
            f"{len(infos)} has no entry")
    if len(infos) > h5.num_images:
        raise DataFormatError(
            f"{image_data_path}: {len(infos)} images after skipping SGB's {skipped} (corrupted "
            f"or missing), but {path} dataset 'split' has {h5.num_images}: entry index "
            f"{h5.num_images} onwards has no h5 row, so the two files do not line up")

    report: dict[str, int] = {
        "h5_images": h5.num_images, "image_data_skipped": skipped,
        "images_without_boxes": int((h5.first_box < 0).sum()),
        "images_without_relations": int(((h5.first_box >= 0) & (h5.first_rel < 0)).sum()),
    }
    usable = h5.first_box >= 0
    if filter_empty_rels:
        usable &= h5.first_rel >= 0
    index = {}
    for name, flag in (("train", SPLIT_TRAIN), ("test", SPLIT_TEST)):
        rows = np.flatnonzero(usable & (h5.split == flag))
        index[name] = rows[:num_im] if num_im > -1 else rows
    index["val"], index["train"] = index["train"][:num_val], index["train"][num_val:]

    counts = {k: 0 for k in ("train_images_dropped_non_overlap",
                             "train_relations_dropped_non_overlap",
                             "train_objects_dropped_empty", "train_relations_dropped_empty",
                             "train_relations_dropped_duplicate")}
    triplets: set[tuple[int, int, int]] = set()
    out = {}
    for name in ("train", "val", "test"):
        images, anns, rels = [], [], []
        train = name == "train"
        for i in index[name].tolist():
            image = _image(h5, i, infos[i], train=train,
                           filter_non_overlap=filter_non_overlap and train,
                           filter_duplicate_rels=filter_duplicate_rels and train,
                           seed=seed, counts=counts, triplets=triplets)
            if image is None:
                continue
            images.append(image[0])
            anns += image[1]
            rels += image[2]
        out[name] = {
            "info": {"description": f"Scene-Graph-Benchmark's preprocessed Visual Genome "
                     f"(VG150, CC BY 4.0), {name} split, in the aehg relation format",
                     "split": name},
            "licenses": [{"id": 1, "name": "CC BY 4.0",
                          "url": "https://creativecommons.org/licenses/by/4.0/"}],
            "images": images, "annotations": anns, "categories": [dict(c) for c in cats],
            "predicate_categories": [dict(p) for p in preds], "relationships": rels,
        }
        report[f"{name}_images"] = len(images)
        report[f"{name}_objects"] = len(anns)
        report[f"{name}_relations"] = len(rels)
    report.update(counts)
    report["train_triplets"] = len(triplets)
    return SgbData(train=out["train"], val=out["val"], test=out["test"],
                   train_triplets=sorted(triplets), report=report)


def _image(h5: SgbH5, i: int, info: Mapping[str, int], *, train: bool, filter_non_overlap: bool,
           filter_duplicate_rels: bool, seed: int, counts: dict[str, int],
           triplets: set[tuple[int, int, int]]
           ) -> tuple[dict, list[dict], list[dict]] | None:
    """One h5 image row → (image, annotations, relationships), or None when it is dropped."""
    fb, lb = int(h5.first_box[i]), int(h5.last_box[i])
    boxes_s = h5.boxes[fb:lb + 1]                       # (n, 4) at box_scale
    labels = h5.labels[fb:lb + 1]
    if h5.first_rel[i] >= 0:
        fr, lr = int(h5.first_rel[i]), int(h5.last_rel[i])
        rel_rows = np.arange(fr, lr + 1)
        pairs = h5.relationships[fr:lr + 1] - fb        # local box indices
        predicates = h5.predicates[fr:lr + 1]
    else:
        rel_rows = np.zeros(0, dtype=np.int64)
        pairs = np.zeros((0, 2), dtype=np.int64)
        predicates = np.zeros(0, dtype=np.int64)
    if filter_non_overlap:
        # SGB: boxlist_iou > 0 at BOX_SCALE, "+1 pixel" areas, so touching boxes overlap.
        s, o = boxes_s[pairs[:, 0]], boxes_s[pairs[:, 1]]
        iw = np.minimum(s[:, 2], o[:, 2]) - np.maximum(s[:, 0], o[:, 0]) + 1
        ih = np.minimum(s[:, 3], o[:, 3]) - np.maximum(s[:, 1], o[:, 1]) + 1
        keep = (iw > 0) & (ih > 0)
        if not keep.any():
            counts["train_images_dropped_non_overlap"] += 1
            counts["train_relations_dropped_non_overlap"] += len(keep)
            return None
        counts["train_relations_dropped_non_overlap"] += int((~keep).sum())
        rel_rows, pairs, predicates = rel_rows[keep], pairs[keep], predicates[keep]

    width, height = info["width"], info["height"]
    boxes = boxes_s / h5.box_scale * max(width, height)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width - 1)    # SGB's clip_to_image (TO_REMOVE = 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height - 1)
    kept = np.ones(len(boxes), dtype=bool)
    if train:  # SGB's training loader: clip_to_image(remove_empty=True)
        kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        counts["train_objects_dropped_empty"] += int((~kept).sum())
        ok = kept[pairs[:, 0]] & kept[pairs[:, 1]] if len(pairs) else np.zeros(0, dtype=bool)
        counts["train_relations_dropped_empty"] += int((~ok).sum())
        rel_rows, pairs, predicates = rel_rows[ok], pairs[ok], predicates[ok]
        triplets.update(zip(labels[pairs[:, 0]].tolist(), predicates.tolist(),
                            labels[pairs[:, 1]].tolist(), strict=True))
    if filter_duplicate_rels and len(pairs):
        groups: dict[tuple[int, int], list[int]] = {}
        for r, (s, o) in enumerate(pairs.tolist()):
            groups.setdefault((s, o), []).append(r)
        if len(groups) < len(pairs):
            rng = np.random.default_rng([seed, i])
            # One draw per pair with several entries, in first-occurrence order.
            pick = [g[int(rng.integers(len(g)))] if len(g) > 1 else g[0]
                    for g in groups.values()]
            counts["train_relations_dropped_duplicate"] += len(pairs) - len(pick)
            rel_rows, pairs, predicates = rel_rows[pick], pairs[pick], predicates[pick]

    image_id = info["image_id"]
    image = {"id": image_id, "file_name": f"{image_id}.jpg", "width": width, "height": height,
             "sgb_index": i}
    ann_ids = np.arange(fb, lb + 1) + 1                   # annotation id = h5 box row + 1
    anns = []
    for k in np.flatnonzero(kept).tolist():
        x1, y1, x2, y2 = boxes[k].tolist()
        anns.append({"id": int(ann_ids[k]), "image_id": image_id,
                     "category_id": int(labels[k]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    rels = [{"id": int(r) + 1, "image_id": image_id, "subject_id": int(ann_ids[s]),
             "object_id": int(ann_ids[o]), "predicate_id": int(p)}   # id = h5 relation row + 1
            for r, (s, o), p in zip(rel_rows.tolist(), pairs.tolist(), predicates.tolist(),
                                    strict=True)]
    return image, anns, rels


def training_triplets(data: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """The sorted distinct (subject category id, predicate id, object category id) of a
    relation-format dict (e.g. the training split of :func:`aehg.data.convert_visual_genome`).
    """
    category = {a["id"]: a["category_id"] for a in data["annotations"]}
    return sorted({(category[r["subject_id"]], r["predicate_id"], category[r["object_id"]])
                   for r in data["relationships"]})


def write_train_triplets(path: str | os.PathLike[str],
                         triplets: Iterable[Sequence[int]], source: str = "") -> Path:
    """Write the training triplet set as JSON, atomically.

    The file is ``{"columns": [subject_category_id, predicate_id, object_category_id],
    "triplets": [[s, p, o], …], "source": …}`` (sorted, distinct).
    """
    rows = sorted({tuple(int(v) for v in t) for t in triplets})
    return write_json(path, {"description": "distinct (subject, predicate, object) triplets of "
                             "the training split: ground-truth triplets outside this set are "
                             "zero-shot (zR@K)", "source": source,
                             "columns": list(TRIPLET_COLUMNS),
                             "triplets": [list(t) for t in rows]})


def load_train_triplets(path: str | os.PathLike[str], cat_ids: Sequence[int] | None = None,
                        predicate_ids: Sequence[int] | None = None) -> np.ndarray:
    """Read a training triplet file (:func:`write_train_triplets`).

    Args:
        path: the JSON file.
        cat_ids, predicate_ids: the category / predicate id of each class index (as
            ``RelationDataset.cat_ids`` / ``predicate_ids``). When given, ids become the class
            indices the evaluation uses (``labels`` and predicates of
            :func:`aehg.evaluation.scene_graph.evaluate`); otherwise the ids are returned.

    Returns:
        (T, 3) int64 rows (subject, predicate, object).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not a triplet file, or an id that is not in ``cat_ids`` /
            ``predicate_ids`` (naming the entry).

    Shapes:
        -> (T, 3)
    """
    path = Path(path)
    data = read_json(path, "training triplets")
    rows = data.get("triplets") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(
            isinstance(t, list) and len(t) == 3 and all(isinstance(v, int) for v in t)
            for t in rows):
        raise DataFormatError(f"{path}: expected {{'triplets': [[subject, predicate, object], "
                              f"…]}} of integer ids")
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    maps = [(cat_ids, "subject category"), (predicate_ids, "predicate"),
            (cat_ids, "object category")]
    for col, (ids, what) in enumerate(maps):
        if ids is None:
            continue
        index = {int(v): k for k, v in enumerate(ids)}
        for t, v in enumerate(arr[:, col].tolist()):
            if v not in index:
                raise DataFormatError(f"{path}: triplets[{t}]: {what} id {v} is not one of the "
                                      f"{len(index)} ids of the data")
        arr[:, col] = [index[v] for v in arr[:, col].tolist()]
    return arr


def convert_sgb(h5_path: str | os.PathLike[str], dicts_path: str | os.PathLike[str],
                image_data_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                box_scale: int = BOX_SCALE, filter_empty_rels: bool = True,
                filter_duplicate_rels: bool = True, filter_non_overlap: bool = False,
                num_val: int = 5000, num_im: int = -1, seed: int = 0,
                image_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Convert SGB's preprocessed Visual Genome into ``out_dir``.

    Writes ``train.json``, ``val.json``, ``test.json`` (relation format) and
    ``train_triplets.json``, each atomically, and only after every input has been read and
    checked, so a bad input leaves ``out_dir`` as it was. Arguments as :func:`load_sgb`.

    Returns:
        The counts of :func:`load_sgb` plus ``"files"``: the written paths (strings).

    Raises:
        FileNotFoundError, ImportError, DataFormatError: as :func:`load_sgb`.
    """
    data = load_sgb(h5_path, dicts_path, image_data_path, box_scale=box_scale,
                    filter_empty_rels=filter_empty_rels,
                    filter_duplicate_rels=filter_duplicate_rels,
                    filter_non_overlap=filter_non_overlap, num_val=num_val, num_im=num_im,
                    seed=seed, image_dir=image_dir)
    out = Path(out_dir)
    options = {"box_scale": box_scale, "filter_empty_rels": filter_empty_rels,
               "filter_duplicate_rels": filter_duplicate_rels,
               "filter_non_overlap": filter_non_overlap, "num_val": num_val, "num_im": num_im,
               "seed": seed}
    files = []
    for name, split in data.splits().items():
        split["info"]["options"] = options
        split["info"]["counts"] = dict(data.report)
        files.append(str(write_json(out / SPLIT_FILES[name], split)))
    files.append(str(write_train_triplets(out / TRAIN_TRIPLETS_FILE, data.train_triplets,
                                          source=f"{SPLIT_FILES['train']} before the duplicate "
                                          f"draw ({json.dumps(options)})")))
    return {**data.report, "files": files}
