"""run_inference's output layout: no picture name can overwrite another output; drawings a
person can read and the overview sheet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from aehg.checkpoint import save_checkpoint
from aehg.config import config_from_dict, config_to_dict
from aehg.export import read_graphml, read_node_link
from aehg.inference import ImageReadError, Predictor, run_inference
from aehg.inference.run import (
    DRAWINGS_DIR,
    GRAPHS_DIR,
    OVERVIEW_FILE,
    OVERVIEW_TILE,
    RESULTS_FILE,
)
from aehg.models import build_model
from aehg.visualize import overview_band

PHOTO = Path(__file__).resolve().parents[1] / "data" / "images" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    cfg = config_from_dict({
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 17},
        "data": {"input_size": 64, "output_size": 16},
        "eval": {"detection_threshold": 0.2}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for head in model.heads:  # make the random model fire somewhere
        nn.init.normal_(head.weight, std=0.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return Predictor(None, path, device="cpu")


def _pictures(folder: Path) -> dict[str, np.ndarray]:
    """Two JPEGs of different sizes: ``results.jpg`` (the photo) and ``x.jpg`` (a crop)."""
    folder.mkdir()
    photo = cv2.imread(str(PHOTO))
    crop = np.ascontiguousarray(photo[:200, :150])
    shutil.copy(PHOTO, folder / "results.jpg")
    cv2.imwrite(str(folder / "x.jpg"), crop)
    return {"results": photo, "x": crop}


def test_input_named_results_does_not_collide(predictor, tmp_path):
    pictures = _pictures(tmp_path / "in")
    out = tmp_path / "out"
    preds = run_inference(predictor, [tmp_path / "in" / "results.jpg", tmp_path / "in" / "x.jpg"],
                          out, progress=False)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["drawings/results.jpg", "drawings/x.jpg", "graphs/results.json",
                     "graphs/x.json", OVERVIEW_FILE, "results.json"]
    # Each per-picture graph is that picture's, and the combined file holds both pictures.
    for stem, image in pictures.items():
        graph = read_node_link(out / GRAPHS_DIR / f"{stem}.json")
        assert graph.graph["file_name"] == f"{stem}.jpg"
        assert (graph.graph["height"], graph.graph["width"]) == image.shape[:2]
        # At least 512 px on the long side (the 200 x 150 crop is enlarged to 512 x 384), and
        # a legend panel on the right.
        drawing = cv2.imread(str(out / DRAWINGS_DIR / f"{stem}.jpg"))
        h, w = image.shape[:2]
        f = max(1.0, 512 / max(h, w))
        assert drawing.shape[0] == round(h * f) and drawing.shape[1] > round(w * f)
    combined = json.loads((out / RESULTS_FILE).read_text())
    assert [im["file_name"] for im in combined["images"]] == ["results.jpg", "x.jpg"]
    assert [im["id"] for im in combined["images"]] == [0, 1]
    assert len(combined["annotations"]) == sum(len(p.scores) for p in preds)
    # The overview: one row of two tiles (and a legend panel); each cell holds a picture.
    sheet = cv2.imread(str(out / OVERVIEW_FILE))
    gap, band = OVERVIEW_TILE // 64, overview_band(OVERVIEW_TILE)
    assert sheet.shape[0] == band + OVERVIEW_TILE + 2 * gap
    assert sheet.shape[1] > 2 * (OVERVIEW_TILE + gap) + gap
    background = sheet[0, 0].astype(int)
    for k in range(2):
        x0 = gap + k * (OVERVIEW_TILE + gap)
        cell = sheet[gap + band:gap + band + OVERVIEW_TILE, x0:x0 + OVERVIEW_TILE].astype(int)
        assert (np.abs(cell - background).max(axis=-1) > 30).mean() > 0.5  # mostly picture
    # One picture: no overview; overview=0: none either.
    single = tmp_path / "single"
    run_inference(predictor, [tmp_path / "in" / "x.jpg"], single, progress=False)
    assert not (single / OVERVIEW_FILE).exists()
    none = tmp_path / "none"
    run_inference(predictor, [tmp_path / "in" / "results.jpg", tmp_path / "in" / "x.jpg"], none,
                  progress=False, overview=0)
    assert not (none / OVERVIEW_FILE).exists()


def test_graphml_goes_to_graphs(predictor, tmp_path):
    _pictures(tmp_path / "in")
    out = tmp_path / "out"
    run_inference(predictor, [tmp_path / "in" / "results.jpg"], out, fmt="graphml",
                  progress=False)
    assert read_graphml(out / GRAPHS_DIR / "results.graphml").graph["file_name"] == "results.jpg"
    assert json.loads((out / RESULTS_FILE).read_text())["images"][0]["file_name"] == \
        "results.jpg"


def test_colliding_stems_are_refused(predictor, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "a.png", "B.jpg", "b.png"):
        shutil.copy(PHOTO, folder / name)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        run_inference(predictor, [folder / "a.jpg", folder / "a.png"], out, progress=False)
    assert str(info.value) == (f"inputs {folder / 'a.jpg'} and {folder / 'a.png'}: same file "
                               f"stem (case ignored); their drawings and graph files would "
                               f"collide, rename one")
    # Stems equal up to case: one file on a case-insensitive file system, refused everywhere.
    with pytest.raises(ValueError) as info:
        run_inference(predictor, [folder / "B.jpg", folder / "b.png"], out, progress=False)
    assert str(info.value) == (f"inputs {folder / 'B.jpg'} and {folder / 'b.png'}: same file "
                               f"stem (case ignored); their drawings and graph files would "
                               f"collide, rename one")
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize("sub", ["", DRAWINGS_DIR, GRAPHS_DIR])
def test_outputs_never_land_in_an_input_folder(predictor, tmp_path, sub):
    out = tmp_path / "out"
    folder = out / sub if sub else out
    folder.mkdir(parents=True)
    shutil.copy(PHOTO, folder / "p.jpg")
    before = (folder / "p.jpg").read_bytes()
    with pytest.raises(ValueError) as info:
        run_inference(predictor, [folder / "p.jpg"], out, progress=False)
    assert str(info.value) == (f"output folder {out} holds the input {folder / 'p.jpg'}; the "
                               f"outputs could overwrite the pictures, choose another folder")
    assert (folder / "p.jpg").read_bytes() == before


def test_truncated_picture_is_refused_or_skipped(predictor, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "whole.jpg")
    data = PHOTO.read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])  # decodes, half grey, in OpenCV
    assert cv2.imread(str(folder / "cut.jpg")) is not None
    inputs = [folder / "cut.jpg", folder / "whole.jpg"]
    with pytest.raises(ImageReadError) as info:
        run_inference(predictor, inputs, tmp_path / "out", progress=False)
    assert str(info.value) == (f"image file {folder / 'cut.jpg'} is truncated (JPEG without its "
                               f"end-of-image marker)")
    preds = run_inference(predictor, inputs, tmp_path / "out", skip_unreadable=True,
                          progress=False)
    assert [p.file_name for p in preds] == ["whole.jpg"]
    assert sorted(p.name for p in (tmp_path / "out" / GRAPHS_DIR).iterdir()) == ["whole.json"]
