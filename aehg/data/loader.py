"""Building datasets and data loaders from a config: collate, worker seeding, distributed sampling.

Example:
    >>> cfg = load_config("configs/demo_pose.yaml")
    >>> train_set = build_dataset(cfg, "train")          # generates synthetic data when asked
    >>> loader = build_dataloader(train_set, cfg, "train", distributed=False)
    >>> batch = next(iter(loader))
    >>> batch["image"].shape, len(batch["meta"])
    (torch.Size([32, 3, 128, 128]), 32)

With ``distributed=True`` the loader uses a :class:`~torch.utils.data.DistributedSampler`; call
``loader.sampler.set_epoch(epoch)`` at the start of every epoch so that each epoch is shuffled
differently.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from aehg.config import Config, ConfigError
from aehg.data.coco import CocoBase, CocoKeypointDataset
from aehg.data.mpii import NUM_JOINTS, MpiiDataset, load_mpii
from aehg.data.relations import RelationDataset
from aehg.data.synthetic import ensure_synthetic

__all__ = ["build_dataloader", "build_dataset", "collate", "seed_worker", "worker_init_fn"]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a list of samples with a leading batch dimension; ``"meta"`` becomes
    the list of the samples' meta dicts.

    Shapes:
        every tensor key: (...) per sample -> (B, ...)
    """
    if not samples:
        raise ValueError("collate: expected at least one sample")
    keys = samples[0].keys()
    for i, s in enumerate(samples[1:], start=1):
        if s.keys() != keys:
            raise ValueError(f"collate: sample {i} has keys {sorted(s)}, sample 0 has "
                             f"{sorted(keys)}")
    batch: dict[str, Any] = {}
    for key in keys:
        if key == "meta":
            batch[key] = [s[key] for s in samples]
        else:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's global streams from the worker's
    torch seed (distinct per worker, reproducible from the loader's generator).

    Our datasets do not depend on it: each sample draws its augmentation from its own stream
    (seed, epoch, index), whichever worker loads it.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    # The legacy global stream, for any library code in the worker that still draws from it.
    np.random.seed(seed)  # noqa: NPY002


# The name the engine imports.
worker_init_fn = seed_worker


def _resolve(root: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def build_dataset(cfg: Config, split: str
                  ) -> CocoKeypointDataset | RelationDataset | MpiiDataset:
    """The dataset of ``split`` ("train" or "val") described by ``cfg.data``.

    With ``cfg.data.source == "synthetic"`` the synthetic data are first generated under
    ``cfg.data.root`` (skipped when they are already there with the same spec) and then read as
    COCO files, exactly like real data. The model's class counts must match the data.
    ``data.kind: single_pose`` gives an :class:`MpiiDataset` (``data.source`` mpii or synthetic).

    Raises:
        ValueError: unknown split.
        ConfigError: ``model.num_classes`` / ``model.num_link_classes`` do not match the data.
        SyntheticFolderError: synthetic data asked into a ``data.root`` that holds other files
            (a ``FileExistsError``; nothing is written).
        FileNotFoundError, DataFormatError: see the datasets (a broken annotation, no usable
            image).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    d = cfg.data
    root = Path(d.root)
    if d.source == "synthetic":
        paths = ensure_synthetic(d.synthetic, root)
        json_path, image_dir = paths.json(split), paths.images(split)
    else:
        json_path = _resolve(root, d.train_json if split == "train" else d.val_json)
        image_dir = _resolve(root, d.train_images if split == "train" else d.val_images)
    if d.kind == "single_pose":
        return _single_pose_dataset(cfg, split, json_path, image_dir)
    common = dict(train=split == "train", input_size=d.input_size, output_size=d.output_size,
                  sigma=d.sigma, max_instances=d.max_instances,
                  tag_per_class=cfg.model.tag_per_class, augment=d.augment,
                  skip_unreadable=d.skip_unreadable, filter_empty=d.filter_empty,
                  seed=cfg.train.seed)
    dataset: CocoKeypointDataset | RelationDataset
    if d.kind == "pose":
        dataset = CocoKeypointDataset(json_path, image_dir, flip_map=d.flip_map,
                                      oks_sigmas=d.oks_sigmas, **common)
        if dataset.num_parts != cfg.model.num_classes:
            raise ConfigError(f"model.num_classes: expected {dataset.num_parts} (the parts of "
                              f"{json_path}), got {cfg.model.num_classes}")
        if cfg.model.num_link_classes:
            raise ConfigError(f"model.num_link_classes: expected 0 for pose data, got "
                              f"{cfg.model.num_link_classes}")
    else:
        dataset = RelationDataset(json_path, image_dir, max_links=d.max_links, **common)
        if dataset.num_classes != cfg.model.num_classes:
            raise ConfigError(f"model.num_classes: expected {dataset.num_classes} (the object "
                              f"classes of {json_path}), got {cfg.model.num_classes}")
        if dataset.num_predicates != cfg.model.num_link_classes:
            raise ConfigError(f"model.num_link_classes: expected {dataset.num_predicates} (the "
                              f"predicates of {json_path}), got {cfg.model.num_link_classes}")
    return dataset


def _single_pose_dataset(cfg: Config, split: str, path: Path, image_dir: Path) -> MpiiDataset:
    """MPII-format people (hourglass h5, official .mat, or synthetic h5), one crop each.

    A .mat gives the training split only: its training people minus the standard validation
    people of ``data.val_json`` (the hourglass code's ``valid.h5``, matched by index/person).
    """
    d = cfg.data
    if cfg.model.num_classes != NUM_JOINTS:
        raise ConfigError(f"model.num_classes: expected {NUM_JOINTS} (the MPII joints of "
                          f"{path}), got {cfg.model.num_classes}")
    if path.suffix.lower() == ".mat":
        val = _resolve(Path(d.root), d.val_json)
        if split != "train" or val.suffix.lower() not in (".h5", ".hdf5"):
            raise ConfigError(f"data.val_json: the MPII .mat ({path}) has no validation split: "
                              f"give the hourglass code's valid.h5 as data.val_json (its people "
                              f"are then left out of the .mat's training people), got {val}")
        ann = load_mpii(path, "train", exclude=load_mpii(val))
    else:
        ann = load_mpii(path)
    return MpiiDataset(ann, image_dir, train=split == "train", input_size=d.input_size,
                       output_size=d.output_size, sigma=d.sigma, flip_map=d.flip_map,
                       augment=d.augment, skip_unreadable=d.skip_unreadable,
                       seed=cfg.train.seed)


def build_dataloader(dataset: Dataset, cfg: Config, split: str, distributed: bool = False,
                     *, sampler: Sampler[int] | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` with the batch size, workers and seed of ``cfg``.

    Training shuffles (through a :class:`DistributedSampler` when ``distributed``, which then needs
    ``loader.sampler.set_epoch(epoch)`` every epoch) and drops the last incomplete batch when the
    dataset holds at least one full batch; validation keeps the order and every image. A given
    ``sampler`` replaces both (the training engine passes one that resumes inside an epoch).
    Augmentations are seeded from ``cfg.train.seed`` and the rank (see ``CocoBase.set_epoch``).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    train = split == "train"
    batch_size = cfg.train.batch_size
    rank = 0
    if sampler is None and distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=cfg.train.seed,
                                     drop_last=False)
    if isinstance(sampler, DistributedSampler):
        rank = sampler.rank
    elif distributed and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
    # Ranks draw different augmentations (the sampler already gives them different images).
    generator = torch.Generator()
    generator.manual_seed(cfg.train.seed + 1000 * rank)
    if isinstance(dataset, CocoBase):
        dataset.reseed([cfg.train.seed, rank])
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=train and len(dataset) >= batch_size,  # type: ignore[arg-type]
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
