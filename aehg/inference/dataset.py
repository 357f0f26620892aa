"""Predictions for a whole validation dataset or loader (docs/design.md §8)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset

from aehg.checkpoint import unwrap_model
from aehg.config import Config
from aehg.data.coco import CocoBase, UnreadableImageError
from aehg.data.info import base_dataset, data_info, dataset_image_ids
from aehg.data.loader import collate, seed_worker
from aehg.data.mpii import MpiiDataset
from aehg.inference.decode import Prediction, decode_predictions
from aehg.inference.maps import forward_maps, infer_maps, maps_to_cpu

__all__ = ["predict_dataset"]


def _base_index(data: Any, index: int) -> int:
    """Position in the underlying CocoBase of item ``index`` of ``data`` (through Subsets)."""
    while isinstance(data, Subset):
        index = int(data.indices[index])
        data = data.dataset
    return index


class _NoSubstitution(Dataset):
    """The samples of ``data`` without substitution: where ``CocoBase.get`` would replace an
    unreadable image by the next one (fine for training), this gives a marker
    ``{"skipped": (image_id, why)}``, so that no image is predicted twice. A marker (rather than
    the base dataset's ``skipped`` dict) carries the skip out of a DataLoader worker process.
    An unreadable image without ``skip_unreadable`` gives ``{"error": exception}``, raised again
    in the main process with its own message (a worker's exception would come wrapped in the
    worker's traceback)."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.base: CocoBase = base_dataset(data)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        j = _base_index(self.data, index)
        try:
            sample = self.base.eval_sample(j)  # image and meta: no training targets
        except (FileNotFoundError, UnreadableImageError) as exc:
            return {"error": exc}
        if sample is None:
            img_id = self.base.ids[j]
            return {"skipped": (img_id, self.base.skipped[img_id])}
        return sample


class _Pictures(Dataset):
    """The original pictures of image ids (for the multi-scale path): item k is
    ``{"image_id", "image": BGR array or None, "skipped": why or None, "error": exception or
    None}``."""

    def __init__(self, base: CocoBase, ids: list[Any]) -> None:
        self.base, self.ids = base, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_id = self.ids[index]
        try:
            image = self.base.read_or_skip(img_id)
        except (FileNotFoundError, UnreadableImageError) as exc:  # see _NoSubstitution
            return {"image_id": img_id, "image": None, "skipped": None, "error": exc}
        why = self.base.skipped.get(img_id) if image is None else None
        return {"image_id": img_id, "image": image, "skipped": why, "error": None}


def _as_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _eval_loader(dataset: Dataset, batch_size: int, cfg: Config, collate_fn: Any
                 ) -> DataLoader:
    """Batches of ``dataset`` in order, loaded by ``data.num_workers`` worker processes (no
    more than there are batches; 0: in this process)."""
    n = len(dataset)  # type: ignore[arg-type]
    workers = min(cfg.data.num_workers, math.ceil(n / batch_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_fn, worker_init_fn=seed_worker,
                      prefetch_factor=cfg.data.prefetch_factor if workers > 0 else None)


def _collate_readable(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"batch": collated readable samples or None, "skipped": [(image_id, why), …],
    "error": the first read error or None}``."""
    readable = [s for s in samples if "skipped" not in s and "error" not in s]
    return {"batch": collate(readable) if readable else None,
            "skipped": [s["skipped"] for s in samples if "skipped" in s],
            "error": next((s["error"] for s in samples if "error" in s), None)}


def _readable_batches(data: Dataset | DataLoader, batch_size: int, cfg: Config
                      ) -> Iterator[dict[str, Any]]:
    """Batches of readable samples (image and meta) in the order of ``data``, loaded by the
    given loader's workers, or for a dataset by ``data.num_workers`` workers; skipped images
    are recorded in the base dataset's ``skipped`` (also when a loader worker found them)."""
    base = base_dataset(data)
    if isinstance(data, DataLoader):
        # Same order, sharding, batch size and workers as the given loader, over the samples
        # without substitution.
        batches = data.batch_sampler if data.batch_sampler is not None else \
            BatchSampler(data.sampler, batch_size, drop_last=False)
        loader: Iterable[dict[str, Any]] = DataLoader(
            _NoSubstitution(data.dataset), batch_sampler=batches, num_workers=data.num_workers,
            collate_fn=_collate_readable, worker_init_fn=data.worker_init_fn,
            multiprocessing_context=data.multiprocessing_context, pin_memory=data.pin_memory)
    else:
        loader = _eval_loader(_NoSubstitution(data), batch_size, cfg, _collate_readable)
    for item in loader:
        if item["error"] is not None:
            raise item["error"]
        for img_id, why in item["skipped"]:
            base.mark_skipped(img_id, why)
        if item["batch"] is not None:
            yield item["batch"]


def _box_inputs(base: CocoBase, ids: list[Any], cfg: Config, task: str
                ) -> list[dict[str, Any]] | None:
    """The known objects of ``ids`` for :func:`infer_maps` (sgcls / predcls), else None."""
    if task == "sgdet":
        return None
    c = cfg.model.num_classes if task == "predcls" else 0
    return [{"boxes": base.boxes(i), "labels": base.labels(i), "num_classes": c,
             "box_sigma": base.box_sigma} for i in ids]


@torch.no_grad()
def predict_dataset(model: nn.Module, data: Dataset | DataLoader, cfg: Config, *,
                    device: str | torch.device | None = None,
                    progress: bool = False) -> list[Prediction]:
    """Predictions for every image of a validation dataset or loader, in original pixels.

    With one test scale the batches of ``data`` (validation transform, ``meta["transform"]``)
    feed the model directly; with several (``cfg.eval.scales``), ``eval.keep_aspect`` or
    ``eval.project_to_input`` each original picture is read again and resized per scale. Flip
    test, early exit and decoding follow ``cfg.eval``.
    The model's train/eval mode is restored afterwards.

    An image that cannot be read (missing, undecodable or truncated file) raises, or with
    ``data.skip_unreadable`` is left out: it is recorded in the dataset's ``skipped`` (and
    logged) and has no prediction. It is never replaced by another image, which would then be
    predicted twice and scored as false positives.

    Args:
        model: the network (a DDP wrapper is unwrapped).
        data: a dataset of aehg.data (validation mode), read in order by ``data.num_workers``
            worker processes in batches of ``train.batch_size``, or a DataLoader over one (its
            sampler, batch size and workers are used). Either way only the image and its
            transforms are built (``CocoBase.eval_sample``), no training targets.
        cfg: the run's config (``eval``, ``data.kind``, ``data.input_size``, …).
        device: where to run (default: the model's device).
        progress: show a tqdm bar.

    Returns:
        One prediction per readable image, in the order of ``data``.

    Raises:
        FileNotFoundError, UnreadableImageError: an unreadable image without
            ``skip_unreadable``; the message names the file and the image id.
    """
    net = unwrap_model(model)
    if device is None:
        device = next(net.parameters()).device
    info = data_info(cfg, data)
    kind = cfg.data.kind
    # sgcls / predcls: the known objects come with each sample (docs/design.md §2 "Tasks").
    task = cfg.data.task if kind == "relations" else "sgdet"
    ecfg = cfg.eval
    flip_map = info.require_flip_map("eval.flip_test") if ecfg.flip_test else info.flip_map
    names = info.class_names if kind == "relations" else None
    was_training = net.training
    net.eval()
    preds: list[Prediction] = []
    try:
        if (len(ecfg.scales) == 1 and ecfg.scales[0] == 1.0 and not ecfg.keep_aspect
                and not ecfg.project_to_input):
            batches: Iterable[dict[str, Any]] = _readable_batches(data, cfg.train.batch_size,
                                                                  cfg)
            if progress:
                from tqdm import tqdm

                batches = tqdm(batches, desc="evaluate", unit="batch")
            for batch in batches:
                maps = forward_maps(net, batch["image"].to(device), ecfg.stacks, ecfg.flip_test,
                                    flip_map)
                maps = maps_to_cpu(maps)
                preds += decode_predictions(maps, batch["meta"], ecfg, kind, names,
                                            info.predicate_names, task=task)
        else:
            base = base_dataset(data)
            ids = dataset_image_ids(data)
            # keep_aspect gives every picture its own input shape: one per forward pass.
            step = 1 if ecfg.keep_aspect else cfg.train.batch_size
            # The pictures are read (and decoded) by the loader's workers.
            chunks: Iterable[list[dict[str, Any]]] = _eval_loader(_Pictures(base, ids), step,
                                                                  cfg, _as_list)
            if progress:
                from tqdm import tqdm

                chunks = tqdm(chunks, desc="evaluate", unit="batch")
            for read in chunks:
                for item in read:
                    if item["error"] is not None:
                        raise item["error"]
                    if item["skipped"] is not None:
                        base.mark_skipped(item["image_id"], item["skipped"])
                chunk = [item["image_id"] for item in read if item["image"] is not None]
                if not chunk:
                    continue
                images = [item["image"] for item in read if item["image"] is not None]
                # Single-person samples are crops around their person, at every scale.
                crops = [base.person(i) for i in chunk] if isinstance(base, MpiiDataset) \
                    else None
                maps, metas = infer_maps(net, images, cfg.data.input_size,
                                         cfg.data.output_size, scales=ecfg.scales,
                                         flip=ecfg.flip_test, flip_map=flip_map,
                                         stacks=ecfg.stacks, device=device, crops=crops,
                                         keep_aspect=ecfg.keep_aspect,
                                         project_to_input=ecfg.project_to_input,
                                         box_inputs=_box_inputs(base, chunk, cfg, task))
                for meta, img_id in zip(metas, chunk, strict=True):
                    meta["image_id"] = img_id
                    meta["file_name"] = base.coco.imgs[img_id]["file_name"]
                preds += decode_predictions(maps, metas, ecfg, kind, names,
                                            info.predicate_names, task=task)
    finally:
        net.train(was_training)
    return preds
