"""Evaluation with unreadable images (data.skip_unreadable) and empty evaluation sets.

An unreadable validation image used to be replaced by the next image, which was then predicted
twice and scored as false positives. Now it is left out of the predictions, of the COCO image
ids and of the recall, and counted in ``skipped_images``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aehg.checkpoint import save_checkpoint
from aehg.config import config_from_dict, config_to_dict
from aehg.data import CocoKeypointDataset, build_dataloader, build_dataset
from aehg.data.coco import DataFormatError
from aehg.evaluation import evaluate_checkpoint, evaluate_model, score_predictions
from aehg.inference import predict_dataset
from aehg.models import build_model
from aehg.models.hourglass import ObjectMaps, StackOutput

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "coco_kp_ccby"
JSON = SAMPLE / "person_keypoints_ccby.json"
IMAGES = SAMPLE / "images"
SIZE, OUT = 256, 64
BROKEN = 790  # the image before 129648 (9 people): its stand-in used to be predicted twice


def _cfg(**data):
    return config_from_dict({
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 17},
        "data": {"input_size": SIZE, "output_size": OUT, "num_workers": 0, **data},
        "train": {"batch_size": 4},
        "eval": {"nms_kernel": 1, "adjust": False, "refine": False}})


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


class Oracle(nn.Module):
    """Ideal maps for known pictures: a unit peak at every annotated part (rounded to the output
    grid) and the person's index as its tag, looked up by the bytes of the network input."""

    def __init__(self, dataset: CocoKeypointDataset) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives predict_dataset a device
        self.maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in range(len(dataset)):
            s = dataset[i]
            parts = s["parts"].numpy()                   # (max_instances, C, 2) flat index, vis
            c, h, w = s["heatmaps"].shape
            heat = np.zeros(c * h * w, np.float32)
            tags = np.zeros(c * h * w, np.float32)
            vis = parts[..., 1] > 0
            person = np.broadcast_to(np.arange(parts.shape[0])[:, None], vis.shape)
            heat[parts[..., 0][vis]] = 1.0
            tags[parts[..., 0][vis]] = 3.0 * person[vis]
            self.maps[_key(s["image"])] = (torch.from_numpy(heat.reshape(c, h, w)),
                                           torch.from_numpy(tags.reshape(c, 1, h, w)))
        self.calls: list[str] = []

    def forward(self, x: torch.Tensor, stacks: int | None = None) -> list[StackOutput]:
        keys = [_key(image) for image in x]
        self.calls += keys
        heat, tags = zip(*(self.maps[k] for k in keys), strict=True)
        return [StackOutput(ObjectMaps(torch.stack(heat), torch.stack(tags)), None)]


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle(CocoKeypointDataset(JSON, IMAGES, input_size=SIZE, output_size=OUT))


def _copy_images(dst: Path, broken: dict[int, bytes]) -> Path:
    """The sample's images under ``dst``, with the files of ``broken`` (image id -> bytes)
    replaced."""
    data = json.loads(JSON.read_text())
    shutil.copytree(IMAGES, dst)
    for im in data["images"]:
        if im["id"] in broken:
            (dst / im["file_name"]).write_bytes(broken[im["id"]])
    return dst


def _truncated(image_id: int) -> bytes:
    """The first 60 % of the image's JPEG: OpenCV decodes it (grey bottom) with a warning."""
    raw = (IMAGES / f"{image_id:012d}.jpg").read_bytes()
    return raw[:int(len(raw) * 0.6)]


def _image_ids() -> list[int]:
    return [im["id"] for im in json.loads(JSON.read_text())["images"]]


def _json_without(tmp_path: Path, image_ids: set[int]) -> Path:
    data = json.loads(JSON.read_text())
    data["images"] = [im for im in data["images"] if im["id"] not in image_ids]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in image_ids]
    path = tmp_path / "without.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_skipped_image_is_left_out_of_the_score(tmp_path, oracle, damage, caplog):
    bad = _truncated(BROKEN) if damage == "truncated" else b"\xff\xd8 not a jpeg"
    images = _copy_images(tmp_path / "images", {BROKEN: bad})
    cfg = _cfg()
    skip = CocoKeypointDataset(JSON, images, input_size=SIZE, output_size=OUT,
                               skip_unreadable=True)
    without = CocoKeypointDataset(_json_without(tmp_path, {BROKEN}), IMAGES, input_size=SIZE,
                                  output_size=OUT)
    oracle.calls.clear()
    with_skip = evaluate_model(oracle, skip, cfg)
    # Each remaining image went through the model exactly once.
    assert len(oracle.calls) == len(set(oracle.calls)) == 16
    reference = evaluate_model(oracle, without, cfg)
    assert with_skip.pop("skipped_images") == 1 and reference.pop("skipped_images") == 0
    assert with_skip == reference
    assert reference["AP"] > 0.5           # ideal maps: a figure that duplicates would lower
    assert set(skip.skipped) == {BROKEN}
    assert f"{BROKEN:012d}.jpg" in caplog.text
    preds = predict_dataset(oracle, skip, cfg)
    assert [p.image_id for p in preds] == [i for i in skip.ids if i != BROKEN]


def test_skip_through_a_loader_with_workers(tmp_path, oracle):
    """A worker process that meets the unreadable image reports it to the main process."""
    images = _copy_images(tmp_path / "images", {BROKEN: _truncated(BROKEN)})
    cfg = _cfg(num_workers=2)
    skip = CocoKeypointDataset(JSON, images, input_size=SIZE, output_size=OUT,
                               skip_unreadable=True)
    without = CocoKeypointDataset(_json_without(tmp_path, {BROKEN}), IMAGES, input_size=SIZE,
                                  output_size=OUT)
    loader = build_dataloader(skip, cfg, "val")
    oracle.calls.clear()
    got = evaluate_model(oracle, loader, cfg)
    assert len(oracle.calls) == len(set(oracle.calls)) == 16
    assert set(skip.skipped) == {BROKEN} and got.pop("skipped_images") == 1
    reference = evaluate_model(oracle, without, _cfg())
    reference.pop("skipped_images")
    assert got == reference


def test_multi_scale_path_skips_too(tmp_path):
    images = _copy_images(tmp_path / "images", {BROKEN: _truncated(BROKEN), 785: b"garbage"})
    cfg = _cfg(input_size=128, output_size=32)
    cfg.eval.scales = [1.0, 0.5]
    keep = {785, BROKEN, 129648, 160012}
    three = _json_without(tmp_path, {i for i in _image_ids() if i not in keep})
    skip = CocoKeypointDataset(three, images, input_size=128, output_size=32,
                               skip_unreadable=True)
    preds = predict_dataset(build_model(cfg.model), skip, cfg)
    assert [p.image_id for p in preds] == [129648, 160012]
    assert set(skip.skipped) == {785, BROKEN}


def test_without_skip_the_unreadable_image_is_an_error(tmp_path, oracle):
    images = _copy_images(tmp_path / "images", {BROKEN: _truncated(BROKEN)})
    ds = CocoKeypointDataset(JSON, images, input_size=SIZE, output_size=OUT)
    path = images / f"{BROKEN:012d}.jpg"
    with pytest.raises(OSError, match=rf"image file {path} is truncated \(JPEG without its "
                                      rf"end-of-image marker; image id {BROKEN} in {JSON}\)"):
        evaluate_model(oracle, ds, _cfg())


def test_every_image_unreadable_is_an_empty_evaluation_set(tmp_path, oracle):
    data = json.loads(JSON.read_text())
    images = _copy_images(tmp_path / "images",
                          {im["id"]: b"\x89PNG\r\n\x1a\n" for im in data["images"]})
    ds = CocoKeypointDataset(JSON, images, input_size=SIZE, output_size=OUT,
                             skip_unreadable=True)
    with pytest.raises(DataFormatError, match=rf"^{JSON}: no image to evaluate \(17 images in "
                                              rf"the set, 17 skipped as unreadable\): an empty "
                                              rf"evaluation set has no score$"):
        evaluate_model(oracle, ds, _cfg())
    # All files missing: known when the dataset is opened.
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'none'}: none of the 17 image "
                                                rf"files of {JSON} is there \(all skipped by "
                                                rf"data.skip_unreadable\)$"):
        CocoKeypointDataset(JSON, tmp_path / "none", skip_unreadable=True)


def test_no_prediction_and_duplicates_are_refused(oracle):
    ds = CocoKeypointDataset(JSON, IMAGES, input_size=SIZE, output_size=OUT)
    cfg = _cfg()
    with pytest.raises(DataFormatError, match=r"no image to evaluate \(17 images in the set, 0 "
                                              r"skipped as unreadable\)"):
        score_predictions([], ds, cfg)
    preds = predict_dataset(oracle, ds, cfg)
    with pytest.raises(ValueError, match=rf"^predictions: image id {preds[2].image_id} of "
                                         rf"{JSON} is predicted more than once"):
        score_predictions([*preds, preds[2]], ds, cfg)


def test_ground_truth_without_a_field_cocoeval_needs(tmp_path, oracle):
    data = json.loads(JSON.read_text())
    ann = next(a for a in data["annotations"] if a["image_id"] == 785)
    del ann["area"]
    path = tmp_path / "no_area.json"
    path.write_text(json.dumps(data))
    ds = CocoKeypointDataset(path, IMAGES, input_size=SIZE, output_size=OUT)
    with pytest.raises(DataFormatError, match=rf"^{path}: annotation id {ann['id']} \(image "
                                              r"785\): missing field 'area', which COCO "
                                              r"keypoint evaluation needs"):
        evaluate_model(oracle, ds, _cfg())


def test_evaluate_checkpoint_reports_skipped_images(tmp_path, capsys):
    images = _copy_images(tmp_path / "images", {BROKEN: _truncated(BROKEN)})
    three = _json_without(tmp_path, {i for i in _image_ids() if i not in (785, BROKEN, 160012)})
    cfg = _cfg(root=str(tmp_path), val_json=three.name, val_images="images",
               skip_unreadable=True, input_size=128, output_size=32)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    ckpt = tmp_path / "run" / "last.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    metrics = evaluate_checkpoint(cfg, ckpt, device="cpu", progress=False)
    out = capsys.readouterr().out
    assert metrics["skipped_images"] == 1
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())[
        "skipped_images"] == 1
    assert (f"skipped 1 unreadable image(s) of {three} (data.skip_unreadable): scored 2 of 3 "
            f"images") in out
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {785, 160012}
    assert images.is_dir()


def test_training_still_replaces_an_unreadable_image(tmp_path):
    images = _copy_images(tmp_path / "images", {BROKEN: _truncated(BROKEN)})
    ds = CocoKeypointDataset(JSON, images, train=True, input_size=SIZE, output_size=OUT,
                             skip_unreadable=True)
    index = ds.ids.index(BROKEN)
    assert ds[index]["meta"]["image_id"] == ds.ids[index + 1]
    assert ds.try_get(index) is None and set(ds.skipped) == {BROKEN}
    assert ds.stats["skipped_images"] == 1


def test_relations_skip_a_truncated_png(tmp_path):
    """Scene graphs (synthetic graph data): the skipped picture has no prediction, so it is
    out of the recall, and it is counted."""
    cfg = config_from_dict({
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 3,
                  "num_link_classes": 2, "tag_per_class": False, "box_size": True,
                  "embedding_dim": 4},
        "data": {"kind": "relations", "source": "synthetic", "root": str(tmp_path / "syn"),
                 "input_size": 64, "output_size": 16, "num_workers": 0, "skip_unreadable": True,
                 "synthetic": {"kind": "graph", "num_train": 1, "num_val": 4, "image_size": 64,
                               "num_object_classes": 3, "num_link_classes": 2}},
        "train": {"batch_size": 2}, "eval": {"detection_threshold": 0.2}})
    val = build_dataset(cfg, "val")
    png = val.image_dir / val.coco.imgs[2]["file_name"]
    png.write_bytes(png.read_bytes()[:-12])                 # cut short: no IEND chunk
    model = build_model(cfg.model)
    preds = predict_dataset(model, val, cfg)
    assert [p.image_id for p in preds] == [1, 3, 4]
    assert set(val.skipped) == {2} and str(png) in val.skipped[2]
    assert evaluate_model(model, val, cfg)["skipped_images"] == 1
