"""Scene-graph dataset over the relation format of docs/design.md §5.

The JSON is a COCO instances file plus ``"predicate_categories": [{"id", "name"}]`` and
``"relationships": [{"id", "image_id", "subject_id", "object_id", "predicate_id"}]`` (subject and
object ids are annotation ids). Each object is an instance with one visible part: the channel of
its class at its box centre; its box goes to :func:`build_targets` (``box_index``/``box_size``);
each relationship is a link from subject (source) to object (destination) located at the midpoint
of the two box centres. Augmentation is the one of :class:`aehg.data.coco.CocoBase`; a flip keeps
classes (no left/right classes). Boxes are clipped to the output map after the warp; an object
whose box leaves the map entirely counts as ``parts_outside`` and its links as ``links_dropped``.
Each object is one ``instances`` and one ``parts`` of the statistics, each relationship one
``links``.

Collisions — two objects of one class on one output pixel (``object_collisions``) and two listed
links on one output pixel (``link_collisions``, any classes: they share the src/dst embedding
maps) — are counted per sample (``meta["stats"]``) and over the dataset (``stats``); with
slots, so are the listed objects / links that found no free slot at their pixel
(``objects_beyond_slots``, ``links_beyond_slots``).

With ``task`` sgcls or predcls (docs/design.md §2 "Tasks") the known objects are input too:
the image gains the box channels of :func:`aehg.data.box_channels.render_box_channels`, drawn
from the boxes after the sample's warp (augmentation included, so they move with the image),
for training and evaluation alike; ``meta`` then carries ``known_boxes`` (N, 4) in original
pixels and ``known_labels`` (N,), which decoding reads the objects at.

Example:
    >>> ds = RelationDataset("annotations/train.json", "images/train", train=True)
    >>> ds.class_names[:2], ds.predicate_names[:2], ds.stats["object_collisions"]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from aehg.config import TASKS, AugmentConfig
from aehg.data.box_channels import box_channel_sigma, render_box_channels
from aehg.data.coco import (
    CocoBase,
    DataFormatError,
    coco_from_dict,
    load_coco_json,
)
from aehg.data.targets import TargetStats, build_targets
from aehg.data.transforms import transform_boxes

__all__ = ["RelationDataset", "count_collisions"]


def count_collisions(targets: dict[str, np.ndarray], labels: np.ndarray,
                     output_size: tuple[int, int]) -> dict[str, int]:
    """Collisions in built targets: objects of one class and listed links sharing a pixel.

    Args:
        targets: output of :func:`build_targets` for objects (one visible part per instance).
        labels: (N,) class of each input instance (row n of ``targets["parts"]``).
        output_size: (H, W).
    """
    hw = output_size[0] * output_size[1]
    rows = targets["parts"]                                       # (max_instances, C, 2)
    n = min(len(labels), len(rows))
    lab = np.asarray(labels[:n], dtype=np.int64)
    picked = rows[np.arange(n), lab]                              # (n, 2)
    valid = picked[:, 1] > 0
    keys = lab[valid] * hw + picked[valid, 0] % hw
    out = {"object_collisions": int(valid.sum() - len(np.unique(keys)))}
    if "links" in targets:
        links = targets["links"]
        listed = links[links[:, 4] > 0, 0]
        out["link_collisions"] = int(len(listed) - len(np.unique(listed)))
    return out


class RelationDataset(CocoBase):
    """Objects and relationships from a relation-format JSON and an image folder.

    Args:
        json_path: relation-format JSON (COCO instances + predicates + relationships).
        image_dir: folder the images' ``file_name`` are relative to.
        train: random augmentation (else the validation transform) and, with ``filter_empty``,
            only images with at least one object.
        input_size, output_size: square network input / output-map sides.
        sigma, max_instances, tag_per_class, max_links: passed to :func:`build_targets`.
        augment, skip_unreadable, filter_empty, seed: as for
            :class:`aehg.data.coco.CocoKeypointDataset`.
        object_slots, relation_slots: the model's slots, passed to :func:`build_targets`.
        task: ``data.task``; sgcls / predcls add the box input channels (predcls with the
            class masks) to ``"image"``.
        box_sigma: σ of the rendered centre heatmap in input pixels (default
            :func:`aehg.data.box_channels.box_channel_sigma`: ``sigma`` times the stride).
        sparse_targets: samples hold the sparse targets (``build_targets(..., sparse=True)``)
            instead of the dense maps.

    Attributes:
        coco: the pycocotools ``COCO`` object (of the whole JSON, relationships included in
        ``coco.dataset``); ``class_names``, ``cat_ids`` (category id of class index k),
        ``predicate_names``, ``predicate_ids``; ``flip_map`` (identity over classes).
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], *,
                 train: bool = False, input_size: int = 512, output_size: int = 128,
                 sigma: float = 2.0, max_instances: int = 30, tag_per_class: bool = False,
                 max_links: int = 64, augment: AugmentConfig | None = None,
                 skip_unreadable: bool = False, filter_empty: bool = True,
                 seed: int = 0, object_slots: int = 1, relation_slots: int = 1,
                 task: str = "sgdet", box_sigma: float | None = None,
                 sparse_targets: bool = False) -> None:
        if task not in TASKS:
            raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")
        super().__init__(json_path, image_dir, train=train, input_size=input_size,
                         output_size=output_size, sigma=sigma, max_instances=max_instances,
                         tag_per_class=tag_per_class, augment=augment,
                         skip_unreadable=skip_unreadable, seed=seed,
                         sparse_targets=sparse_targets)
        self.max_links = int(max_links)
        self.task = task
        self.box_sigma = box_channel_sigma(sigma, input_size, output_size) \
            if box_sigma is None else float(box_sigma)
        self.object_slots, self.relation_slots = int(object_slots), int(relation_slots)
        data = load_coco_json(self.json_path, relations=True)
        # load_coco_json checked every bbox that is there (4 finite numbers, w, h >= 0); each
        # object needs one here (its centre is the object's part).
        for ann in data["annotations"]:
            if "bbox" not in ann:
                raise DataFormatError(f"{self.json_path}: annotation id {ann['id']!r}: missing "
                                      f"field 'bbox' ([x, y, w, h] with w, h >= 0)")
        cats = sorted(data["categories"], key=lambda c: c["id"])
        preds = sorted(data["predicate_categories"], key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in cats]
        self.class_names = [str(c["name"]) for c in cats]
        self.predicate_ids = [p["id"] for p in preds]
        self.predicate_names = [str(p["name"]) for p in preds]
        self.flip_map = np.arange(len(cats), dtype=np.int64)
        cat_index = {c: k for k, c in enumerate(self.cat_ids)}
        pred_index = {p: k for k, p in enumerate(self.predicate_ids)}
        self.coco = coco_from_dict(data)

        # Per image: object annotations (non-crowd) in order, crowd regions, and links between
        # object rows; a relationship naming a crowd annotation is not a link.
        self._objects: dict[int, list[dict]] = {}
        self._labels: dict[int, np.ndarray] = {}
        self._ignore: dict[int, list[dict]] = {}
        row: dict[int, int] = {}
        for img_id in self.coco.getImgIds():
            objs, ignore = [], []
            for ann in self.coco.imgToAnns.get(img_id, []):
                (ignore if ann.get("iscrowd", 0) else objs).append(ann)
            for r, ann in enumerate(objs):
                row[ann["id"]] = r
            self._objects[img_id], self._ignore[img_id] = objs, ignore
            self._labels[img_id] = np.array([cat_index[a["category_id"]] for a in objs],
                                            dtype=np.int64)
        links: dict[int, list[tuple[int, int, int]]] = {i: [] for i in self._objects}
        self.relations_ignored = 0
        for rel in data["relationships"]:
            s, o = row.get(rel["subject_id"]), row.get(rel["object_id"])
            if s is None or o is None:
                self.relations_ignored += 1
                continue
            links[rel["image_id"]].append((s, o, pred_index[rel["predicate_id"]]))
        self._links = {i: np.array(v, dtype=np.int64).reshape(-1, 3) for i, v in links.items()}
        ids = sorted(self.coco.getImgIds())
        if train and filter_empty:
            ids = [i for i in ids if self._objects[i]]
            if not ids and self.coco.imgs:
                raise DataFormatError(
                    f"{self.json_path}: no image with an object (a non-crowd annotation) among "
                    f"its {len(self.coco.imgs)} images and {len(data['annotations'])} "
                    f"annotations: nothing to train on")
        self.ids = ids
        self._check_usable(skip_unreadable)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_predicates(self) -> int:
        return len(self.predicate_names)

    def boxes(self, img_id: int) -> np.ndarray:
        """Object boxes of ``img_id`` as x1, y1, x2, y2 in original pixels, (N, 4)."""
        objs = self._objects[img_id]
        b = np.array([a["bbox"] for a in objs], dtype=np.float64).reshape(len(objs), 4)
        b[:, 2:] += b[:, :2]
        return b

    def labels(self, img_id: int) -> np.ndarray:
        """Class index (0-based, into ``class_names``) of each object of ``img_id``, (N,)."""
        return self._labels[img_id]

    def links(self, img_id: int) -> np.ndarray:
        """Links of ``img_id`` as (subject row, object row, predicate index), (M, 3)."""
        return self._links[img_id]

    def _input(self, img_id: int, image: np.ndarray, params: Any, rng: np.random.Generator
               ) -> tuple[torch.Tensor, dict[str, Any], Any]:
        """The image input, plus the box channels of the known objects for sgcls / predcls."""
        tensor, meta, params = super()._input(img_id, image, params, rng)
        if self.task == "sgdet":
            return tensor, meta, params
        boxes, labels = self.boxes(img_id), self._labels[img_id]
        predcls = self.task == "predcls"
        channels = render_box_channels(
            transform_boxes(boxes, meta["input_transform"]), tuple(tensor.shape[-2:]),
            sigma=self.box_sigma, labels=labels if predcls else None,
            num_classes=self.num_classes if predcls else 0)
        meta["known_boxes"], meta["known_labels"] = boxes, labels
        return torch.cat([tensor, torch.from_numpy(channels)]), meta, params

    def _targets(self, img_id: int, m_out: np.ndarray, flip: bool, with_mask: bool
                 ) -> tuple[dict[str, np.ndarray], TargetStats, dict[str, int], dict[str, Any]]:
        size = self.output_size
        labels = self._labels[img_id]
        n = len(labels)
        boxes = transform_boxes(self.boxes(img_id), m_out)
        clipped = np.clip(boxes, -0.5, size - 0.5)
        seen = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        # Objects that left the map keep their own (outside) box so that build_targets counts
        # them as outside and drops their links.
        boxes = np.where(seen[:, None], clipped, boxes)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        parts = np.zeros((n, self.num_classes, 3))
        parts[np.arange(n), labels, :2] = centres
        parts[np.arange(n), labels, 2] = 1.0
        mask = self._loss_mask(self._ignore[img_id], img_id, m_out) if with_mask else None
        targets, stats = build_targets(
            parts, (size, size), sigma=self.sigma, max_instances=self.max_instances,
            tag_per_class=self.tag_per_class, mask=mask, boxes=boxes, links=self._links[img_id],
            num_link_classes=self.num_predicates, max_links=self.max_links,
            object_slots=self.object_slots, relation_slots=self.relation_slots,
            sparse=self.sparse_targets)
        extra = count_collisions(targets, labels, (size, size))
        extra.setdefault("link_collisions", 0)
        # Listed objects / links that found no slot at their pixel (docs/design.md "Slots").
        if "object_groups" in targets:
            listed = int(targets["parts"][:, :, 1].any(axis=1).sum())
            extra["objects_beyond_slots"] = listed - int((targets["object_groups"] >= 0).sum())
        if "link_groups" in targets:
            listed = int((targets["links"][:, 4] > 0).sum())
            extra["links_beyond_slots"] = listed - int((targets["link_groups"] >= 0).sum())
        meta = {"boxes": boxes, "labels": labels, "relations": self._links[img_id],
                "ann_ids": [a["id"] for a in self._objects[img_id]]}
        return targets, stats, extra, meta
