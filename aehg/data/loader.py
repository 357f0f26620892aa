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

Training runs one loader over all its epochs (:class:`EpochBatchSampler`): its batches are
``(epoch, index)`` pairs, so that persistent worker processes draw each epoch's augmentation
although their copies of the dataset never see the main process's ``set_epoch``:

    >>> batches = EpochBatchSampler(sampler, batch_size=8, epochs=range(0, 300))
    >>> loader = build_dataloader(train_set, cfg, "train", batch_sampler=batches)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
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
from aehg.data.targets import PEAK_KEYS

__all__ = ["EpochBatchSampler", "EpochDataset", "build_dataloader", "build_dataset", "collate",
           "seed_worker", "worker_init_fn"]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a list of samples with a leading batch dimension; ``"meta"`` becomes
    the list of the samples' meta dicts. The ragged peak lists of sparse targets
    (``"heat_peaks"``, ``"link_peaks"``) are concatenated instead, behind a column holding each
    row's sample index (:func:`aehg.data.render.render_targets` draws them on the device).

    Shapes:
        every tensor key: (...) per sample -> (B, ...);
        peak lists: (P_i, 3) per sample -> (sum P_i, 4) (sample index, channel, y, x)
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
        elif key in PEAK_KEYS:
            batch[key] = _concat_peaks([s[key] for s in samples])
        else:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


def _concat_peaks(lists: list[torch.Tensor]) -> torch.Tensor:
    dtype = lists[0].dtype
    if len(lists) > torch.iinfo(dtype).max + 1:
        dtype = torch.int64
    counts = torch.tensor([len(p) for p in lists])
    index = torch.repeat_interleave(torch.arange(len(lists), dtype=dtype), counts)
    return torch.cat([index[:, None], torch.cat(lists).to(dtype)], dim=1)


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


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Training batches over one or more epochs, each index paired with its epoch.

    Epoch ``e`` is the order of ``sampler`` after ``sampler.set_epoch(e)`` (when it has one; a
    :class:`~torch.utils.data.DistributedSampler` shuffles by it), cut into full batches of
    ``batch_size`` (an incomplete last batch is dropped). The first epoch starts at its batch
    ``start`` (a resume inside an epoch); the stream ends after ``max_batches`` batches in all
    (None: at the end of the last epoch), so that workers never load past the run's last step.

    The sampler is iterated in the main process, lazily: ``set_epoch(e + 1)`` is called when
    the loader prefetches the first batch of epoch ``e + 1``, while epoch ``e`` may still be
    training. Pair it with :class:`EpochDataset` (``build_dataloader(..., batch_sampler=…)``
    does), which selects each item's epoch in whichever process loads it.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, epochs: Sequence[int], *,
                 start: int = 0, max_batches: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive value, got {batch_size}")
        if start < 0:
            raise ValueError(f"start: expected a non-negative batch position, got {start}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.epochs = list(epochs)
        self.start = int(start)
        self.max_batches = max_batches

    @property
    def batches_per_epoch(self) -> int:
        """Full batches in one whole epoch."""
        return len(self.sampler) // self.batch_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        left = self.max_batches
        start = self.start
        b = self.batch_size
        for epoch in self.epochs:
            if left is not None and left <= 0:
                return
            set_epoch = getattr(self.sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
            order = [int(i) for i in self.sampler]
            stop = len(order) // b
            if left is not None:
                stop = min(stop, start + left)
                left -= max(stop - start, 0)
            for k in range(start, stop):
                yield [(epoch, i) for i in order[k * b:(k + 1) * b]]
            start = 0

    def __len__(self) -> int:
        n = max(len(self.epochs) * self.batches_per_epoch - self.start, 0) if self.epochs else 0
        return n if self.max_batches is None else max(min(n, self.max_batches), 0)


class EpochDataset(Dataset):
    """``dataset`` indexed by ``(epoch, index)`` pairs: selects the epoch
    (``dataset.set_epoch``, which seeds the augmentation of every sample) in the process that
    loads the item, then returns ``dataset[index]``.

    A persistent worker holds its own copy of the dataset, made when it started: only what
    travels with the indices reaches it. Sample ``index`` of epoch ``e`` is then the same in a
    worker as in the main process (``CocoBase.set_epoch``).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        return self.dataset[index]


def _resolve(root: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def build_dataset(cfg: Config, split: str, *, sparse_targets: bool = False
                  ) -> CocoKeypointDataset | RelationDataset | MpiiDataset:
    """The dataset of ``split`` ("train" or "val") described by ``cfg.data``.

    With ``cfg.data.source == "synthetic"`` the synthetic data are first generated under
    ``cfg.data.root`` (skipped when they are already there with the same spec) and then read as
    COCO files, exactly like real data. The model's class counts must match the data.
    ``data.kind: single_pose`` gives an :class:`MpiiDataset` (``data.source`` mpii or synthetic).
    With ``sparse_targets`` (what training asks for) the samples hold the sparse targets of
    ``build_targets(..., sparse=True)``, rendered on the device by
    :func:`aehg.data.render.render_targets`; else the dense maps.

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
        return _single_pose_dataset(cfg, split, json_path, image_dir, sparse_targets)
    common = dict(train=split == "train", input_size=d.input_size, output_size=d.output_size,
                  sigma=d.sigma, max_instances=d.max_instances,
                  tag_per_class=cfg.model.tag_per_class, augment=d.augment,
                  skip_unreadable=d.skip_unreadable, filter_empty=d.filter_empty,
                  seed=cfg.train.seed, sparse_targets=sparse_targets)
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
        dataset = RelationDataset(json_path, image_dir, max_links=d.max_links,
                                  object_slots=cfg.model.object_slots,
                                  relation_slots=cfg.model.relation_slots, task=d.task,
                                  **common)
        if dataset.num_classes != cfg.model.num_classes:
            raise ConfigError(f"model.num_classes: expected {dataset.num_classes} (the object "
                              f"classes of {json_path}), got {cfg.model.num_classes}")
        if dataset.num_predicates != cfg.model.num_link_classes:
            raise ConfigError(f"model.num_link_classes: expected {dataset.num_predicates} (the "
                              f"predicates of {json_path}), got {cfg.model.num_link_classes}")
    return dataset


def _single_pose_dataset(cfg: Config, split: str, path: Path, image_dir: Path,
                         sparse_targets: bool = False) -> MpiiDataset:
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
                       seed=cfg.train.seed, sparse_targets=sparse_targets)


def build_dataloader(dataset: Dataset, cfg: Config, split: str, distributed: bool = False,
                     *, sampler: Sampler[int] | None = None,
                     batch_sampler: EpochBatchSampler | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` with the batch size, workers and seed of ``cfg``.

    Training shuffles (through a :class:`DistributedSampler` when ``distributed``, which then needs
    ``loader.sampler.set_epoch(epoch)`` every epoch) and drops the last incomplete batch when the
    dataset holds at least one full batch; validation keeps the order and every image. A given
    ``sampler`` replaces both. A given ``batch_sampler`` (what the training engine passes: one
    stream over its epochs, resumable inside an epoch) replaces the sampler and the batch size:
    the loader then reads :class:`EpochDataset` ``(dataset)`` and, with workers and
    ``data.persistent_workers``, keeps its workers between iterations.
    Augmentations are seeded from ``cfg.train.seed`` and the rank (see ``CocoBase.set_epoch``).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    if sampler is not None and batch_sampler is not None:
        raise ValueError("build_dataloader: give a sampler or a batch_sampler, not both")
    train = split == "train"
    batch_size = cfg.train.batch_size
    rank = 0
    if sampler is None and batch_sampler is None and distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=cfg.train.seed,
                                     drop_last=False)
    inner = batch_sampler.sampler if batch_sampler is not None else sampler
    if isinstance(inner, DistributedSampler):
        rank = inner.rank
    elif distributed and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
    # Ranks draw different augmentations (the sampler already gives them different images).
    generator = torch.Generator()
    generator.manual_seed(cfg.train.seed + 1000 * rank)
    if isinstance(dataset, CocoBase):
        dataset.reseed([cfg.train.seed, rank])
    workers = cfg.data.num_workers
    prefetch = cfg.data.prefetch_factor if workers > 0 else None
    if batch_sampler is not None:
        return DataLoader(
            EpochDataset(dataset),
            batch_sampler=batch_sampler,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=seed_worker,
            generator=generator,
            persistent_workers=workers > 0 and cfg.data.persistent_workers,
            prefetch_factor=prefetch,
            pin_memory=torch.cuda.is_available(),
        )
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
        prefetch_factor=prefetch,
        pin_memory=torch.cuda.is_available(),
    )
