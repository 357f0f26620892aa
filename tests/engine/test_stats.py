"""Target statistics reach the user: dataset block, per-epoch metrics records, warnings."""

from __future__ import annotations

import json
import logging
import re

import torch

from aehg.config import load_config
from aehg.data.synthetic import ensure_synthetic
from aehg.engine import train
from aehg.engine.trainer import _data_warning, _EpochStats

# No augmentation: every sample is at validation geometry, so what the targets lose follows from
# the JSON alone (16 images, batch 4: one epoch is 4 steps over every image once).
_NO_AUGMENT = ["data.augment.rotation=0", "data.augment.translate=0",
               "data.augment.scale_min=1", "data.augment.scale_max=1",
               "data.augment.flip_prob=0"]


def _cfg(tiny_config, tmp_path, *extra):
    return tiny_config(tmp_path / "run", "data.synthetic.max_people=6", "train.epochs=1",
                       "train.scheduler=none", "train.log_interval=100", *_NO_AUGMENT, *extra)


def _people(cfg) -> list[tuple[int, int]]:
    """(people, visible parts) per training image, straight from the generated JSON."""
    paths = ensure_synthetic(cfg.data.synthetic, cfg.data.root)
    data = json.loads(paths.train_json.read_text())
    per_image: dict[int, list[int]] = {img["id"]: [0, 0] for img in data["images"]}
    for ann in data["annotations"]:
        visible = sum(v > 0 for v in ann["keypoints"][2::3])
        if visible and not ann.get("iscrowd", 0):
            per_image[ann["image_id"]][0] += 1
            per_image[ann["image_id"]][1] += visible
    return [tuple(v) for v in per_image.values()]


def _data_records(out_dir):
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if any(k.startswith("data/") for k in r)]


def _named_keys(text: str) -> set[str]:
    return set(re.findall(r"\bdata(?:\.[a-z_]+)+", text))


def _assert_keys_exist(cfg, keys):
    for key in keys:
        node = cfg
        for part in key.split("."):
            assert hasattr(node, part), f"{key} named in a warning is not a config key"
            node = getattr(node, part)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "aehg.train" and r.levelno == logging.WARNING]


def test_epoch_record_counts_dropped_instances_and_warns(tmp_path, tiny_config, caplog):
    cfg = _cfg(tiny_config, tmp_path, "data.max_instances=2")
    people = _people(cfg)
    expected = sum(max(n - 2, 0) for n, _ in people)
    total = sum(n for n, _ in people)
    parts = sum(p for _, p in people)
    assert len(people) == 16 and 0.01 * total < expected < total

    with caplog.at_level(logging.INFO, logger="aehg.train"):
        summary = train(cfg, validate=False)
    assert summary["step"] == 4                    # the one epoch, all of it

    (record,) = _data_records(tmp_path / "run")
    assert record == {"step": 4, "epoch": 0, "data/images": 16, "data/instances": total,
                      "data/instances_dropped": expected, "data/parts": parts,
                      "data/parts_outside": 0}

    # The dataset block at the start: the same counts (validation geometry, annotations only).
    infos = [r.getMessage() for r in caplog.records
             if r.name == "aehg.train" and r.levelno == logging.INFO]
    block = next(m for m in infos if m.startswith("training data:"))
    assert re.search(rf"instances over data\.max_instances \(2\) +{expected} of {total} ", block)
    assert re.search(r"\n  images +16\n", block)

    # One warning for the dataset, one for the epoch; both name the key to raise.
    warnings = _warnings(caplog)
    assert len(warnings) == 2
    assert warnings[0].startswith("training data at validation geometry: ")
    assert warnings[1].startswith("epoch 0 (16 training samples): ")
    for message in warnings:
        assert f"{expected} of {total} (" in message
        assert "raise data.max_instances" in message
        _assert_keys_exist(cfg, _named_keys(message))


def test_generous_max_instances_no_warning_and_partial_epoch_record(tmp_path, tiny_config,
                                                                    caplog):
    # Stop after 2 of the epoch's 4 steps: the partial epoch gets its record (8 samples).
    cfg = _cfg(tiny_config, tmp_path, "data.max_instances=6", "train.max_steps=2")
    with caplog.at_level(logging.INFO, logger="aehg.train"):
        summary = train(cfg, validate=False)
    assert (summary["step"], summary["epoch"]) == (2, 0)
    assert _warnings(caplog) == []
    (record,) = _data_records(tmp_path / "run")
    assert (record["step"], record["epoch"], record["data/images"]) == (2, 0, 8)
    assert record["data/instances_dropped"] == record["data/parts_outside"] == 0
    assert record["data/instances"] > 0


def test_warning_names_existing_keys_for_every_loss():
    cfg = load_config(None, ["data.kind=relations", "model.num_link_classes=3",
                             "data.synthetic.kind=graph"])
    counts = {"instances": 100, "instances_dropped": 2, "parts": 100, "parts_outside": 1,
              "links": 50, "links_dropped": 1}
    # 2% of instances, exactly 1% of parts (not more), 2% of links.
    message = _data_warning(counts, cfg, augmented=True)
    assert "raise data.max_instances" in message and "raise data.max_links (64)" in message
    assert "output map" not in message
    counts["parts_outside"] = 2
    message = _data_warning(counts, cfg, augmented=True)
    assert "lower data.augment.scale_max (1.25)" in message
    _assert_keys_exist(cfg, _named_keys(message))
    assert _named_keys(message) == {"data.max_instances", "data.max_links",
                                    "data.augment.scale_max", "data.augment.translate",
                                    "data.augment.rotation"}
    assert "annotated outside their image" in _data_warning(counts, cfg, augmented=False)
    assert _data_warning({"instances": 0, "instances_dropped": 0}, cfg, augmented=True) is None


def test_each_kind_of_loss_is_warned_once_per_run():
    cfg = load_config(None, ["data.kind=relations", "model.num_link_classes=3",
                             "data.synthetic.kind=graph"])
    warned: set[str] = set()
    first = {"instances": 100, "instances_dropped": 5, "parts": 100, "parts_outside": 0}
    message = _data_warning(first, cfg, augmented=True, skip=warned)
    assert "data.max_instances" in message and warned == {"instances_dropped"}
    # The next epoch loses instances again (said already) and now parts too (new).
    second = {"instances": 100, "instances_dropped": 5, "parts": 100, "parts_outside": 5}
    message = _data_warning(second, cfg, augmented=True, skip=warned)
    assert "data.max_instances" not in message and "output map" in message
    assert warned == {"instances_dropped", "parts_outside"}
    assert _data_warning(second, cfg, augmented=True, skip=warned) is None


def test_epoch_stats_sum_batches():
    acc = _EpochStats(("instances", "instances_dropped"))
    acc.add([{"stats": {"instances": 3, "instances_dropped": 1}},
             {"stats": {"instances": 2, "instances_dropped": 0}}])
    acc.add([{"image_id": 7}])                     # a sample without statistics: not counted
    acc.add(None)
    acc.add([{"stats": {"instances": 4, "instances_dropped": 2, "parts": 9}}])
    assert acc.reduce(torch.device("cpu")) == {"images": 3, "instances": 9,
                                               "instances_dropped": 3}
