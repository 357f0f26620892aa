"""What inference and evaluation need to know about a model's data: names, skeleton, flip map
and categories (:func:`data_info`), and the COCO-format dataset under a loader or Subset
(docs/design.md §5, §8)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from aehg.config import Config
from aehg.data.coco import CocoBase, CocoKeypointDataset
from aehg.keypoints import derive_flip_map, missing_flip_map_error

__all__ = ["DataInfo", "base_dataset", "data_info", "dataset_image_ids", "resolve_flip_map"]

log = logging.getLogger(__name__)


def resolve_flip_map(flip_map: Sequence[int] | None, num_classes: int, kind: str = "pose"
                     ) -> np.ndarray | None:
    """The channel permutation of a horizontal flip: the given one (checked), the identity for
    object classes (they do not swap), else None — a keypoint set's swap is never guessed from
    its part count (see :func:`aehg.keypoints.derive_flip_map`)."""
    if flip_map is not None:
        fm = np.asarray(flip_map, dtype=np.int64)
        if fm.shape != (num_classes,) or sorted(fm.tolist()) != list(range(num_classes)):
            raise ValueError(f"flip_map: expected a permutation of 0..{num_classes - 1}, "
                             f"got {list(flip_map)}")
        return fm
    if kind == "relations":
        return np.arange(num_classes, dtype=np.int64)
    return None


@dataclass
class DataInfo:
    """What inference needs to know about the data a model was trained on.

    Attributes:
        kind: "pose" or "relations".
        flip_map: channel permutation of a horizontal flip, or None when nothing gives one
            (a keypoint set without side words and without ``data.flip_map``); a flip then
            asks :meth:`require_flip_map`, which says what to set.
        class_names: part / object class names, or None.
        predicate_names: link class names, or None.
        skeleton: 0-based part pairs to draw, or None.
        categories: COCO categories (for result files), or None.
        predicate_categories: predicate categories, or None.
    """

    kind: str
    flip_map: np.ndarray | None
    class_names: list[str] | None = None
    predicate_names: list[str] | None = None
    skeleton: list[tuple[int, int]] | None = None
    categories: list[dict] | None = None
    predicate_categories: list[dict] | None = None

    def require_flip_map(self, where: str) -> np.ndarray:
        """The flip map, or a :class:`aehg.keypoints.FlipMapError` naming ``where`` the flip
        was asked for, the part names and ``data.flip_map``."""
        if self.flip_map is None:
            raise missing_flip_map_error(self.class_names, where)
        return self.flip_map


def data_info(cfg: Config, dataset: Dataset | None = None) -> DataInfo:
    """Names, skeleton and flip map from a dataset, else from the config's data files.

    Order for the flip map: ``cfg.data.flip_map`` (a training run stores the flip map it
    trained with there, so checkpoints carry it); the dataset's; the category's ``flip_map``
    field; the part names' side words; else None (never guessed). Synthetic data describe
    themselves without files; real data read the categories of the validation JSON when it
    exists.
    """
    c = cfg.model.num_classes
    kind = cfg.data.kind
    base = base_dataset(dataset) if dataset is not None else None
    cats: list[dict] | None = None
    preds: list[dict] | None = None
    if base is not None:
        data = base.coco.dataset
        cats = list(data.get("categories", [])) or None
        preds = list(data.get("predicate_categories", [])) or None
    elif kind == "single_pose":  # MPII's 16 joints, from any source (mpii or synthetic)
        from aehg.data.mpii import mpii_category

        cats = [mpii_category()]
    elif cfg.data.source == "synthetic":
        from aehg.data.synthetic import graph_categories, pose_category

        if kind == "pose":
            try:
                cats = [pose_category(c)]
            except ValueError:
                cats = None
        else:
            cats, preds = graph_categories(c, cfg.model.num_link_classes)
    else:
        path = Path(cfg.data.val_json)
        path = path if path.is_absolute() else Path(cfg.data.root) / path
        if path.is_file():
            import json

            try:
                data = json.loads(path.read_text())
                cats = list(data.get("categories", [])) or None
                preds = list(data.get("predicate_categories", [])) or None
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                log.warning("%s: cannot read category names; drawing without them", path)
    info = DataInfo(kind=kind, flip_map=np.arange(c), categories=cats,
                    predicate_categories=preds)
    flip_map = cfg.data.flip_map
    if kind in ("pose", "single_pose"):
        cat = next((x for x in cats or [] if x.get("keypoints")), None)
        if cat is not None and len(cat["keypoints"]) == c:
            info.class_names = [str(n) for n in cat["keypoints"]]
            info.skeleton = [(int(a) - 1, int(b) - 1) for a, b in cat.get("skeleton", [])]
            if (flip_map is None and isinstance(base, CocoKeypointDataset)
                    and base.flip_map_source is not None):
                flip_map = base.flip_map.tolist()
            if flip_map is None and cat.get("flip_map") is not None:
                flip_map = list(cat["flip_map"])
            if flip_map is None:
                flip_map = derive_flip_map(info.class_names)
    else:
        if cats is not None and len(cats) == c:
            info.class_names = [str(x["name"]) for x in sorted(cats, key=lambda x: x["id"])]
            info.categories = sorted(cats, key=lambda x: x["id"])
        if preds is not None and len(preds) == cfg.model.num_link_classes:
            info.predicate_names = [str(x["name"]) for x in sorted(preds, key=lambda x: x["id"])]
            info.predicate_categories = sorted(preds, key=lambda x: x["id"])
    info.flip_map = resolve_flip_map(flip_map, c, kind)
    return info


def base_dataset(data: Any) -> CocoBase:
    """The CocoKeypointDataset / RelationDataset under a loader or Subset."""
    d = data.dataset if isinstance(data, DataLoader) else data
    while isinstance(d, Subset):
        d = d.dataset
    if not isinstance(d, CocoBase):
        raise TypeError(f"expected a CocoKeypointDataset or RelationDataset (or a DataLoader / "
                        f"Subset of one), got {type(d).__name__}")
    return d


def dataset_image_ids(data: Any) -> list[int]:
    """The image ids a dataset (or Subset of one) covers, in order."""
    base = base_dataset(data)
    d = data.dataset if isinstance(data, DataLoader) else data
    index: list[int] = list(range(len(base.ids)))
    chain = []
    while isinstance(d, Subset):
        chain.append(d.indices)
        d = d.dataset
    for indices in reversed(chain):
        index = [index[i] for i in indices]
    return [base.ids[i] for i in index]
