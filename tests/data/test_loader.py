"""build_dataset / build_dataloader on synthetic data, collate, worker seeding, distributed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler, SequentialSampler

from aehg.config import ConfigError, config_from_dict
from aehg.data import CocoKeypointDataset, RelationDataset
from aehg.data.loader import EpochBatchSampler, build_dataloader, build_dataset, collate


def _cfg(root, kind="pose", **data):
    syn = {"kind": "pose" if kind == "pose" else "graph", "num_train": 8, "num_val": 3,
           "image_size": 64, "seed": 2}
    model = {"num_stacks": 1, "channels": 16, "num_classes": 7}
    if kind == "relations":
        model.update(num_classes=4, num_link_classes=3, tag_per_class=False)
    return config_from_dict({
        "model": model,
        "data": {"kind": kind, "source": "synthetic", "root": str(root), "input_size": 64,
                 "output_size": 16, "num_workers": 0, "synthetic": syn, **data},
        "train": {"batch_size": 4, "seed": 0},
    })


def test_collate_stacks_tensors_and_lists_meta():
    samples = [{"image": torch.full((3, 4, 4), float(i)), "parts": torch.zeros(2, 5, 2),
                "meta": {"image_id": i}} for i in range(3)]
    batch = collate(samples)
    assert batch["image"].shape == (3, 3, 4, 4) and batch["parts"].shape == (3, 2, 5, 2)
    assert batch["image"][2, 0, 0, 0] == 2 and [m["image_id"] for m in batch["meta"]] == [0, 1, 2]
    with pytest.raises(ValueError, match="sample 1 has keys"):
        collate([samples[0], {"image": samples[1]["image"], "meta": {}}])


def test_build_pose_dataset_and_loader(tmp_path):
    cfg = _cfg(tmp_path)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train, CocoKeypointDataset) and train.train and not val.train
    assert len(train) == 8 and len(val) == 3
    assert (tmp_path / "annotations" / "train.json").is_file()
    loader = build_dataloader(train, cfg, "train", distributed=False)
    batches = list(loader)
    assert len(batches) == 2                          # 8 images, batch 4, last dropped if short
    b = batches[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["heatmaps"].shape == (4, 7, 16, 16)
    assert b["parts"].shape == (4, 30, 7, 2) and len(b["meta"]) == 4
    vb = list(build_dataloader(val, cfg, "val"))
    assert [m["image_id"] for m in vb[0]["meta"]] == [1, 2, 3]   # order kept, nothing dropped


def test_build_relation_dataset(tmp_path):
    cfg = _cfg(tmp_path, "relations")
    ds = build_dataset(cfg, "train")
    assert isinstance(ds, RelationDataset) and ds.num_classes == 4 and ds.num_predicates == 3
    b = next(iter(build_dataloader(ds, cfg, "train")))
    assert b["links"].shape == (4, 64, 5) and b["link_heatmaps"].shape == (4, 3, 16, 16)
    assert b["box_size"].shape == (4, 30, 2)


def test_class_count_mismatch_is_a_config_error(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.model.num_classes = 17
    with pytest.raises(ConfigError, match=r"model.num_classes: expected 7"):
        build_dataset(cfg, "train")
    cfg = _cfg(tmp_path / "g", "relations")
    cfg.model.num_link_classes = 5
    with pytest.raises(ConfigError, match=r"model.num_link_classes: expected 3"):
        build_dataset(cfg, "val")
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg, "test")


def test_workers_draw_different_augmentations(tmp_path):
    cfg = _cfg(tmp_path, augment={"rotation": 30.0})
    cfg.train.batch_size = 1
    cfg.data.num_workers = 2
    ds = build_dataset(cfg, "train")
    ds.ids = [ds.ids[0]] * 4                          # the same image four times
    loader = build_dataloader(ds, cfg, "train")
    transforms = [b["meta"][0]["transform"] for b in loader]
    assert len(transforms) == 4
    assert len({np.round(t, 6).tobytes() for t in transforms}) == 4
    # Reproducible: the same config gives the same augmentations.
    again = [b["meta"][0]["transform"] for b in build_dataloader(ds, cfg, "train")]
    assert [t.tobytes() for t in again] == [t.tobytes() for t in transforms]


def test_distributed_sampler(tmp_path):
    cfg = _cfg(tmp_path)
    ds = build_dataset(cfg, "train")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        loader = build_dataloader(ds, cfg, "train", distributed=True)
        assert isinstance(loader.sampler, DistributedSampler)
        loader.sampler.set_epoch(1)
        ids = [m["image_id"] for b in loader for m in b["meta"]]
        assert sorted(ids) == sorted(ds.ids)
    finally:
        dist.destroy_process_group()


def test_set_epoch_makes_main_process_augmentation_reproducible(tmp_path):
    cfg = _cfg(tmp_path)
    ds = build_dataset(cfg, "train")
    torch.manual_seed(5)
    ds.set_epoch(3)
    a = [ds[0]["meta"]["transform"] for _ in range(3)]
    ds.set_epoch(3)
    b = [ds[0]["meta"]["transform"] for _ in range(3)]
    ds.set_epoch(4)
    c = ds[0]["meta"]["transform"]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.allclose(a[0], c)


class _EpochPermutation(Sampler[int]):
    """A sampler whose order depends on its epoch (as a DistributedSampler's does)."""

    def __init__(self, n):
        self.n, self.epoch, self.epochs_set = n, 0, []

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __iter__(self):
        return iter(np.random.default_rng(self.epoch).permutation(self.n).tolist())

    def __len__(self):
        return self.n


@pytest.mark.parametrize(("start", "max_batches"), [(0, None), (2, None), (1, 5), (0, 0)])
def test_epoch_batch_sampler_matches_a_naive_stream(start, max_batches):
    sampler = _EpochPermutation(10)
    stream = EpochBatchSampler(sampler, 3, range(1, 4), start=start, max_batches=max_batches)
    expected = []
    for epoch in (1, 2, 3):
        order = np.random.default_rng(epoch).permutation(10).tolist()
        batches = [[(epoch, i) for i in order[k:k + 3]] for k in (0, 3, 6)]  # 9 of 10
        expected += batches[start:] if epoch == 1 else batches
    if max_batches is not None:
        expected = expected[:max_batches]
    assert stream.batches_per_epoch == 3
    assert list(stream) == expected and len(stream) == len(expected)
    # The sampler is asked for the epochs the stream reaches, no further.
    assert sampler.epochs_set == sorted({e for batch in expected for e, _ in batch})
    # A sampler without set_epoch (a plain order) gives the same order every epoch.
    assert list(EpochBatchSampler([4, 2, 0], 2, [0, 1])) == [[(0, 4), (0, 2)], [(1, 4), (1, 2)]]
    with pytest.raises(ValueError, match="batch_size: expected a positive value, got 0"):
        EpochBatchSampler(sampler, 0, [0])


def test_persistent_worker_draws_each_epochs_augmentation(tmp_path):
    """One worker, kept across iterations, loads epochs 0-2: each sample is what the dataset
    gives in the main process after its own set_epoch."""
    cfg = _cfg(tmp_path, augment={"rotation": 30.0})
    cfg.data.num_workers = 1
    ds = build_dataset(cfg, "train")
    stream = EpochBatchSampler(SequentialSampler(range(len(ds))), 4, range(3))
    loader = build_dataloader(ds, cfg, "train", batch_sampler=stream)
    assert loader.persistent_workers and loader.prefetch_factor == cfg.data.prefetch_factor
    reference = build_dataset(cfg, "train")
    reference.reseed([cfg.train.seed, 0])                 # what build_dataloader sets (rank 0)
    expected = []
    for epoch in range(3):
        reference.set_epoch(epoch)
        expected += [reference[i]["meta"]["transform"].tobytes() for i in range(8)]
    for _ in range(2):                                    # the second pass reuses the worker
        got = [m["transform"].tobytes() for b in loader for m in b["meta"]]
        assert got == expected
    assert len(set(expected[:8]) & set(expected[8:16])) == 0    # the epochs differ
    cfg.data.persistent_workers = False
    assert not build_dataloader(ds, cfg, "train", batch_sampler=stream).persistent_workers
