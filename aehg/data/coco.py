"""COCO-format datasets: the shared reading/augmentation pipeline and the keypoint dataset.

:class:`CocoKeypointDataset` reads a COCO person-keypoints JSON (any keypoint set: names, skeleton
and flip map come from the JSON's category and the arguments) and an image folder. Each sample is
one OpenCV affine warp of one image (rotation, scale, translation, horizontal flip with the
left/right swap of the flip map, then colour jitter) plus the targets of
:func:`aehg.data.targets.build_targets` at output resolution. Crowd regions and people without
annotated keypoints become the loss mask. In validation mode the long side is scaled to the input
size and centred, and ``meta["transform"]`` maps original pixels to output-map pixels (invert it to
bring predictions back).

A JSON that is not COCO raises :class:`DataFormatError` naming the file and the offending id and
field; a missing or unreadable image raises ``FileNotFoundError`` / :class:`UnreadableImageError`
naming the file and the image id, unless ``skip_unreadable`` is set, in which case the image is
skipped, logged and counted in ``stats["skipped_images"]``.

Example:
    >>> ds = CocoKeypointDataset("ann/person_keypoints_val2017.json", "val2017", train=False)
    >>> sample = ds[0]
    >>> sample["image"].shape, sample["heatmaps"].shape
    (torch.Size([3, 512, 512]), torch.Size([17, 128, 128]))
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from aehg.keypoints import COCO_FLIP_MAP, COCO_OKS_SIGMAS

__all__ = [
    "COCO_FLIP_MAP",
    "COCO_OKS_SIGMAS",
    "CocoKeypointDataset",
    "DataFormatError",
    "UnreadableImageError",
    "derive_flip_map",
    "load_coco_json",
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


def load_coco_json(path: str | os.PathLike[str], *, relations: bool = False) -> dict[str, Any]:
    """Read and check a COCO-format JSON (plus the relation fields of docs/design.md §5 if asked).

    Checks the top-level fields, the fields every image, annotation and category needs, that every
    annotation names an existing image and category, and (``relations``) that every relationship
    names existing annotations of its image and an existing predicate.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not JSON, or not COCO; the message names the file, the id and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON: {exc}") from None
    _require(isinstance(data, dict), path, f"not a COCO file: expected a JSON object at the top "
             f"level, got {type(data).__name__}")
    fields = ["images", "annotations", "categories"]
    if relations:
        fields += ["predicate_categories", "relationships"]
    for name in fields:
        _require(name in data, path, f"not a COCO file: missing field {name!r}")
        _require(isinstance(data[name], list), path,
                 f"field {name!r}: expected a list, got {type(data[name]).__name__}")

    def check_items(name: str, keys: Sequence[str]) -> dict[Any, dict]:
        by_id: dict[Any, dict] = {}
        for i, item in enumerate(data[name]):
            _require(isinstance(item, dict), path, f"{name}[{i}]: expected an object")
            _require("id" in item, path, f"{name}[{i}]: missing field 'id'")
            for key in keys:
                _require(key in item, path, f"{name} id {item['id']}: missing field {key!r}")
            _require(item["id"] not in by_id, path, f"{name} id {item['id']}: duplicate id")
            by_id[item["id"]] = item
        return by_id

    images = check_items("images", ("file_name", "width", "height"))
    categories = check_items("categories", ("name",))
    anns = check_items("annotations", ("image_id", "category_id"))
    for ann in data["annotations"]:
        _require(ann["image_id"] in images, path,
                 f"annotation id {ann['id']}: field 'image_id' names missing image "
                 f"{ann['image_id']}")
        _require(ann["category_id"] in categories, path,
                 f"annotation id {ann['id']}: field 'category_id' names missing category "
                 f"{ann['category_id']}")
    if relations:
        predicates = check_items("predicate_categories", ("name",))
        check_items("relationships", ("image_id", "subject_id", "object_id", "predicate_id"))
        for rel in data["relationships"]:
            for key in ("subject_id", "object_id"):
                ann = anns.get(rel[key])
                _require(ann is not None, path, f"relationship id {rel['id']}: field {key!r} "
                         f"names missing annotation {rel[key]}")
                _require(ann["image_id"] == rel["image_id"], path,
                         f"relationship id {rel['id']}: field {key!r} names annotation "
                         f"{rel[key]} of image {ann['image_id']}, not of image {rel['image_id']}")
            _require(rel["predicate_id"] in predicates, path,
                     f"relationship id {rel['id']}: field 'predicate_id' names missing predicate "
                     f"{rel['predicate_id']}")
    return data


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` index over an already loaded dict (without its progress prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def derive_flip_map(names: Sequence[str]) -> list[int]:
    """Swap ``left*``/``right*`` names (``left_eye`` ↔ ``right_eye``); other parts map to
    themselves. For COCO's 17 names this is the standard COCO flip map."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for i, n in enumerate(names):
        if n.startswith("left"):
            out.append(index.get("right" + n[4:], i))
        elif n.startswith("right"):
            out.append(index.get("left" + n[5:], i))
        else:
            out.append(i)
    return out


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


# --------------------------------------------------------------------------- base


class CocoBase(Dataset):
    """The reading, augmentation and bookkeeping shared by the keypoint and relation datasets.

    Subclasses fill ``self.ids`` (image ids in order) and implement :meth:`_instances` (what the
    targets are built from) and :meth:`_build` (targets + meta from the transformed instances).
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], *,
                 train: bool, input_size: int, output_size: int, sigma: float,
                 max_instances: int, tag_per_class: bool, augment: AugmentConfig | None,
                 skip_unreadable: bool, seed: int) -> None:
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

    def _drop_missing_files(self) -> None:
        """With ``skip_unreadable``: drop images whose file is missing, logging each one."""
        keep = []
        for img_id in self.ids:
            path = self.image_dir / self.coco.imgs[img_id]["file_name"]
            if path.is_file():
                keep.append(img_id)
            else:
                self._skip(img_id, f"missing file {path}")
        self.ids = keep

    def _skip(self, img_id: int, why: str) -> None:
        self.skipped[img_id] = why
        log.warning("skipping image id %s: %s", img_id, why)

    def read_image(self, img_id: int) -> np.ndarray:
        """The BGR uint8 image of ``img_id``; raises naming the file and the image id."""
        info = self.coco.imgs[img_id]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} (image id {img_id} in "
                                    f"{self.json_path})")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UnreadableImageError(f"cannot decode image file {path} (image id {img_id} in "
                                       f"{self.json_path})")
        if image.shape[:2] != (info["height"], info["width"]):
            raise UnreadableImageError(
                f"image file {path} (image id {img_id}) is {image.shape[1]}x{image.shape[0]} "
                f"but {self.json_path} says {info['width']}x{info['height']}")
        return image

    # ------------------------------------------------------------------ samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index)

    def get(self, index: int, params: AffineParams | None = None) -> dict[str, Any]:
        """Sample ``index`` with the given augmentation (None: random when training, else none).

        Returns:
            ``"image"`` (3, H_in, W_in) float32 tensor normalised with ImageNet mean/std, the
            target arrays of :func:`build_targets` as tensors, and ``"meta"`` (image_id,
            file_name, orig_size (h, w), input_transform and transform as 2×3 float64 arrays,
            flipped, stats, and the transformed instances in output pixels).
        """
        for attempt in range(len(self.ids)):
            img_id = self.ids[(index + attempt) % len(self.ids)]
            try:
                image = self.read_image(img_id)
            except (FileNotFoundError, UnreadableImageError) as exc:
                if not self.skip_unreadable:
                    raise
                if img_id not in self.skipped:
                    self._skip(img_id, str(exc))
                continue
            return self._sample(img_id, image, params, self.sample_rng(index))
        raise RuntimeError(f"no readable image left in {self.json_path} "
                           f"({len(self.skipped)} skipped)")

    def _params(self, params: AffineParams | None, rng: np.random.Generator) -> AffineParams:
        if params is not None:
            return params
        return random_affine_params(rng, self.augment) if self.train else AffineParams()

    def _sample(self, img_id: int, image: np.ndarray, params: AffineParams | None,
                rng: np.random.Generator) -> dict[str, Any]:
        params = self._params(params, rng)
        h, w = image.shape[:2]
        m_in = affine_matrix((h, w), self.input_size, params)
        m_out = compose(self._in_to_out, m_in)
        warped = warp_image(image, m_in, self.input_size)
        tensor = to_network_input(warped, rng, self.augment.color_jitter if self.train
                                  else 0.0)
        targets, stats, extra, meta = self._targets(img_id, m_out, params.flip, with_mask=True)
        self._running = self._running + stats
        for k, v in extra.items():
            self._running_extra[k] = self._running_extra.get(k, 0) + v
        info = self.coco.imgs[img_id]
        sample: dict[str, Any] = {"image": torch.from_numpy(tensor)}
        sample.update({k: torch.from_numpy(v) for k, v in targets.items()})
        sample["meta"] = {
            "image_id": img_id, "file_name": info["file_name"], "orig_size": (h, w),
            "input_transform": m_in, "transform": m_out, "flipped": params.flip,
            "stats": {**stats.as_dict(), **extra}, **meta,
        }
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
            ``flip_map`` field, else derived from left/right names, else identity.
        oks_sigmas: per-part OKS sigmas; None: the category's ``oks_sigmas`` field, else COCO's
            for 17 parts, else 0.0625 per part (with a warning).
        augment: augmentation ranges.
        skip_unreadable: skip (log, count) missing/unreadable images instead of raising.
        filter_empty: see ``train``.
        seed: seed of the augmentation stream (DataLoader workers reseed it).

    Attributes:
        coco: the pycocotools ``COCO`` object; ``part_names``, ``skeleton`` (0-based pairs),
        ``flip_map`` and ``oks_sigmas`` (numpy arrays), ``category_id``, ``ids`` (image ids).
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], *,
                 train: bool = False, input_size: int = 512, output_size: int = 128,
                 sigma: float = 2.0, max_instances: int = 30, tag_per_class: bool = True,
                 flip_map: Sequence[int] | None = None,
                 oks_sigmas: Sequence[float] | None = None,
                 augment: AugmentConfig | None = None, skip_unreadable: bool = False,
                 filter_empty: bool = True, seed: int = 0) -> None:
        super().__init__(json_path, image_dir, train=train, input_size=input_size,
                         output_size=output_size, sigma=sigma, max_instances=max_instances,
                         tag_per_class=tag_per_class, augment=augment,
                         skip_unreadable=skip_unreadable, seed=seed)
        data = load_coco_json(self.json_path)
        path = self.json_path
        cats = [c for c in data["categories"] if c.get("keypoints")]
        _require(bool(cats), path, "no category has a 'keypoints' field (not a keypoints file)")
        cat = cats[0]
        self.category_id = cat["id"]
        self.part_names: list[str] = [str(n) for n in cat["keypoints"]]
        k = len(self.part_names)
        self.skeleton = [(int(a) - 1, int(b) - 1) for a, b in cat.get("skeleton", [])]
        for ann in data["annotations"]:
            if ann["category_id"] != self.category_id or ann.get("iscrowd", 0):
                continue
            kps = ann.get("keypoints")
            _require(kps is not None, path, f"annotation id {ann['id']}: missing field "
                     f"'keypoints'")
            _require(isinstance(kps, list) and len(kps) == 3 * k, path,
                     f"annotation id {ann['id']}: field 'keypoints' has "
                     f"{len(kps) if isinstance(kps, list) else type(kps).__name__} values, "
                     f"expected {3 * k} (3 x {k} parts of category {cat['name']!r})")
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
        self.ids = ids
        if skip_unreadable:
            self._drop_missing_files()

    def _resolve_flip_map(self, flip_map: Sequence[int] | None, cat: dict) -> np.ndarray:
        k = len(self.part_names)
        source = "argument flip_map"
        if flip_map is None and cat.get("flip_map") is not None:
            flip_map, source = cat["flip_map"], f"{self.json_path}: category field 'flip_map'"
        if flip_map is None:
            return np.asarray(derive_flip_map(self.part_names), dtype=np.int64)
        fm = np.asarray(flip_map, dtype=np.int64)
        if fm.shape != (k,) or sorted(fm.tolist()) != list(range(k)):
            raise DataFormatError(f"{source}: expected a permutation of 0..{k - 1}, "
                                  f"got {list(flip_map)}")
        return fm

    def _resolve_sigmas(self, sigmas: Sequence[float] | None, cat: dict) -> np.ndarray:
        k = len(self.part_names)
        source = "argument oks_sigmas"
        if sigmas is None and cat.get("oks_sigmas") is not None:
            sigmas, source = cat["oks_sigmas"], f"{self.json_path}: category field 'oks_sigmas'"
        if sigmas is None:
            if k == 17:
                return np.asarray(COCO_OKS_SIGMAS, dtype=np.float64)
            log.warning("%s: no OKS sigmas for %d parts (data.oks_sigmas); using 0.0625 each",
                        self.json_path, k)
            return np.full(k, 0.0625)
        out = np.asarray(sigmas, dtype=np.float64)
        if out.shape != (k,) or not (out > 0).all():
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
                                       tag_per_class=self.tag_per_class, mask=mask)
        meta = {"keypoints": parts, "ann_ids": [a["id"] for a in self._people[img_id]]}
        return targets, stats, {}, meta
