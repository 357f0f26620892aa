"""Predictions for a whole validation dataset or loader (docs/design.md §8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aehg.checkpoint import unwrap_model
from aehg.config import Config
from aehg.data.info import base_dataset, data_info, dataset_image_ids
from aehg.data.loader import collate
from aehg.inference.decode import Prediction, decode_predictions
from aehg.inference.maps import forward_maps, infer_maps, maps_to_cpu

__all__ = ["predict_dataset"]


def _batches(data: Any, batch_size: int) -> Iterable[dict[str, Any]]:
    if isinstance(data, DataLoader):
        yield from data
        return
    for start in range(0, len(data), batch_size):
        yield collate([data[i] for i in range(start, min(start + batch_size, len(data)))])


@torch.no_grad()
def predict_dataset(model: nn.Module, data: Dataset | DataLoader, cfg: Config, *,
                    device: str | torch.device | None = None,
                    progress: bool = False) -> list[Prediction]:
    """Predictions for every image of a validation dataset or loader, in original pixels.

    With one test scale the batches of ``data`` (validation transform, ``meta["transform"]``)
    feed the model directly; with several (``cfg.eval.scales``) each original picture is read
    again and resized per scale. Flip test, early exit and decoding follow ``cfg.eval``.
    The model's train/eval mode is restored afterwards.

    Args:
        model: the network (a DDP wrapper is unwrapped).
        data: a dataset of aehg.data (validation mode) or a DataLoader over one.
        cfg: the run's config (``eval``, ``data.kind``, ``data.input_size``, …).
        device: where to run (default: the model's device).
        progress: show a tqdm bar.
    """
    net = unwrap_model(model)
    if device is None:
        device = next(net.parameters()).device
    info = data_info(cfg, data)
    kind = cfg.data.kind
    ecfg = cfg.eval
    names = info.class_names if kind == "relations" else None
    was_training = net.training
    net.eval()
    preds: list[Prediction] = []
    try:
        if len(ecfg.scales) == 1 and ecfg.scales[0] == 1.0:
            batches: Iterable[dict[str, Any]] = _batches(data, cfg.train.batch_size)
            if progress:
                from tqdm import tqdm

                batches = tqdm(batches, desc="evaluate", unit="batch")
            for batch in batches:
                maps = forward_maps(net, batch["image"].to(device), ecfg.stacks, ecfg.flip_test,
                            info.flip_map)
                maps = maps_to_cpu(maps)
                preds += decode_predictions(maps, batch["meta"], ecfg, kind, names,
                                            info.predicate_names)
        else:
            base = base_dataset(data)
            ids = dataset_image_ids(data)
            chunks = range(0, len(ids), cfg.train.batch_size)
            if progress:
                from tqdm import tqdm

                chunks = tqdm(chunks, desc="evaluate", unit="batch")
            for start in chunks:
                chunk = ids[start:start + cfg.train.batch_size]
                images = [base.read_image(i) for i in chunk]
                maps, metas = infer_maps(net, images, cfg.data.input_size,
                                         cfg.data.output_size, scales=ecfg.scales,
                                         flip=ecfg.flip_test, flip_map=info.flip_map,
                                         stacks=ecfg.stacks, device=device)
                for meta, img_id in zip(metas, chunk, strict=True):
                    meta["image_id"] = img_id
                    meta["file_name"] = base.coco.imgs[img_id]["file_name"]
                preds += decode_predictions(maps, metas, ecfg, kind, names,
                                            info.predicate_names)
    finally:
        net.train(was_training)
    return preds
