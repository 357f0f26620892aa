"""Every tool ends an expected failure in one ``error: …`` line and exit code 2.

Each tool's ``main([...])`` runs in-process with a bad input of each kind: missing and broken
files, checkpoints, devices, data, permissions, a full disk (a monkeypatched writer that fails
part-way with ENOSPC), an existing run, Ctrl-C. ``--debug`` / ``AEHG_DEBUG=1`` let the exception
through, and a bug keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import aehg.io
from aehg.checkpoint import save_checkpoint
from aehg.config import config_from_dict, config_to_dict
from aehg.data import build_dataset
from aehg.models import build_model

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "images" / "grace_hopper.jpg"
VG = ROOT / "tests" / "data" / "visual_genome_sample"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
CUDA_MISSING = "'cuda' requested but CUDA is not available on this machine (use cpu or auto)"
BAD_DEVICE = "expected auto, cpu, cuda, cuda:N or mps, got 'banana'"


def _tool(name):
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"aehg_tool_errors_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_main():
    from aehg.engine.trainer import main

    return main


@pytest.fixture(autouse=True)
def _no_debug_from_the_environment(monkeypatch):
    monkeypatch.delenv("AEHG_DEBUG", raising=False)


def _error(capsys) -> str:
    """The one line the tool printed on stderr (nothing else may be there)."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err[:-1]


# --------------------------------------------------------------------------- a tiny run


def _cfg_dict(tmp: Path) -> dict:
    return {
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 7},
        "data": {"kind": "pose", "source": "synthetic", "root": str(tmp / "data"),
                 "input_size": 64, "output_size": 16, "num_workers": 0,
                 "synthetic": {"kind": "pose", "num_train": 2, "num_val": 2, "image_size": 64}},
        "train": {"batch_size": 2, "device": "cpu", "max_steps": 1,
                  "output_dir": str(tmp / "train_run")},
        "eval": {"detection_threshold": 0.2},
    }


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A config, a checkpoint that fits it, and the synthetic val images."""
    tmp = tmp_path_factory.mktemp("run")
    data = _cfg_dict(tmp)
    config = _write_yaml(tmp / "config.yaml", data)
    cfg = config_from_dict(data)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for head in model.heads:
        nn.init.normal_(head.weight, std=0.3)
    ckpt = tmp / "ckpt" / "last.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    images = Path(build_dataset(cfg, "val").image_dir)
    return {"tmp": tmp, "config": config, "checkpoint": ckpt, "images": images, "dict": data}


@pytest.fixture
def broken_coco_config(run, tmp_path):
    """A config whose annotation files lack their 'annotations' field."""
    data = json.loads(json.dumps(run["dict"]))
    data["data"].update(source="coco", root=str(tmp_path / "coco"), train_json="train.json",
                        val_json="val.json", train_images="img", val_images="img")
    (tmp_path / "coco" / "img").mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / "coco" / f"{split}.json").write_text(
            json.dumps({"images": [], "categories": []}))
    data["train"]["output_dir"] = str(tmp_path / "out")
    return _write_yaml(tmp_path / "coco.yaml", data), tmp_path / "coco"


# --------------------------------------------------------------------------- failing writers


class _FullDiskFile:
    """A file whose first write stores half its bytes, then fails as a full disk does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


class _OsProxy:
    """``os`` for aehg.io, except ``fdopen``, which hands out full-disk files."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdopen(fd, *args, **kwargs):
        return _FullDiskFile(os.fdopen(fd, *args, **kwargs))


class _NoPermissionTempfile:
    """``tempfile`` for aehg.io whose ``mkstemp`` is refused, as in a read-only folder (the
    tests run as root, for whom chmod does not refuse anything)."""

    def __getattr__(self, name):
        return getattr(tempfile, name)

    @staticmethod
    def mkstemp(dir=None, prefix="", suffix=""):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                              os.path.join(dir, f"{prefix}abcdefgh{suffix}"))


@pytest.fixture
def disk_full(monkeypatch):
    monkeypatch.setattr(aehg.io, "os", _OsProxy())


@pytest.fixture
def no_permission(monkeypatch):
    monkeypatch.setattr(aehg.io, "tempfile", _NoPermissionTempfile())


def _no_temp_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.tmp")], "a failed write left its temp file"


# --------------------------------------------------------------------------- eval


def test_eval_errors(run, capsys, tmp_path):
    main = _tool("eval").main
    cfg, ckpt = str(run["config"]), str(run["checkpoint"])
    cases = [
        (["--config", str(tmp_path / "none.yaml"), "--checkpoint", ckpt],
         f"error: config file not found: {tmp_path / 'none.yaml'}"),
        (["--config", cfg, "--checkpoint", ckpt, "train.device=banana"],
         f"error: {cfg}: train.device: {BAD_DEVICE}"),
        (["--config", cfg, "--checkpoint", ckpt, "--device", "banana"],
         f"error: --device: {BAD_DEVICE}"),
        (["--config", cfg, "--checkpoint", str(tmp_path / "none.pt")],
         f"error: checkpoint not found: {tmp_path / 'none.pt'}"),
    ]
    for args, line in cases:
        assert main(args + ["--no-progress"]) == 2, args
        assert _error(capsys) == line
    # Not a checkpoint: the message names the file and the reason (torch's words follow).
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    assert main(["--config", cfg, "--checkpoint", str(bogus), "--no-progress"]) == 2
    assert _error(capsys).startswith(f"error: checkpoint {bogus}: cannot be read as a "
                                     f"weights-only torch file (UnpicklingError: ")


@NO_CUDA
def test_eval_unavailable_device(run, capsys):
    main = _tool("eval").main
    assert main(["--config", str(run["config"]), "--checkpoint", str(run["checkpoint"]),
                 "--device", "cuda"]) == 2
    assert _error(capsys) == f"error: --device: {CUDA_MISSING}"
    assert main(["--config", str(run["config"]), "--checkpoint", str(run["checkpoint"]),
                 "train.device=cuda"]) == 2
    assert _error(capsys) == f"error: {run['config']}: train.device: {CUDA_MISSING}"


def test_eval_bad_data(run, capsys, broken_coco_config):
    config, coco = broken_coco_config
    assert _tool("eval").main(["--config", str(config), "--checkpoint", str(run["checkpoint"]),
                               "--no-progress"]) == 2
    assert _error(capsys) == (f"error: {coco / 'val.json'}: not a COCO file: missing field "
                              f"'annotations'")


def test_eval_disk_full(run, capsys, tmp_path, disk_full):
    out = tmp_path / "eval"
    args = ["--config", str(run["config"]), "--checkpoint", str(run["checkpoint"]),
            "--output", str(out), "--no-progress"]
    assert _tool("eval").main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: no space left on device while writing {out / 'results.json'}"
    assert not (out / "results.json").exists()
    _no_temp_files(out)


def test_eval_no_permission(run, capsys, tmp_path, no_permission):
    out = tmp_path / "eval"
    assert _tool("eval").main(["--config", str(run["config"]), "--checkpoint",
                               str(run["checkpoint"]), "--output", str(out),
                               "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: permission denied while writing {out / 'results.json'}"


# --------------------------------------------------------------------------- infer


def test_infer_errors(run, capsys, tmp_path):
    main = _tool("infer").main
    ckpt = str(run["checkpoint"])
    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(PHOTO, pics / "a.jpg")
    shutil.copy(PHOTO, pics / "A.png")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "cut.jpg").write_bytes(PHOTO.read_bytes()[:300])  # interrupted in the header
    half = tmp_path / "half"
    half.mkdir()
    data = PHOTO.read_bytes()
    (half / "half.jpg").write_bytes(data[: len(data) // 2])  # interrupted in the picture
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    cases = [
        (["--checkpoint", ckpt, "--input", str(tmp_path / "nothing")],
         f"error: input not found: {tmp_path / 'nothing'} (expected an image, a folder, a video "
         f"or a camera index)"),
        (["--checkpoint", ckpt, "--input", str(empty)],
         f"error: no image in folder {empty} (looked for .jpg, .jpeg, .png, .bmp, .tif, .tiff, "
         f".webp)"),
        (["--checkpoint", str(tmp_path / "none.pt"), "--input", str(PHOTO)],
         f"error: checkpoint not found: {tmp_path / 'none.pt'}"),
        (["--checkpoint", ckpt, "--input", str(PHOTO), "model.num_stacks=two"],
         f"error: checkpoint {ckpt}: model.num_stacks: expected int, got 'two'"),
        (["--checkpoint", ckpt, "--input", str(PHOTO), "--device", "banana"],
         f"error: --device: {BAD_DEVICE}"),
        (["--checkpoint", ckpt, "--input", str(pics)],
         f"error: inputs {pics / 'A.png'} and {pics / 'a.jpg'}: same file stem (case ignored); "
         f"their drawings and graph files would collide, rename one"),
        (["--checkpoint", ckpt, "--input", str(cut)],
         f"error: cannot decode image file {cut / 'cut.jpg'} (not a picture OpenCV reads)"),
        (["--checkpoint", ckpt, "--input", str(half)],
         f"error: image file {half / 'half.jpg'} is truncated (JPEG without its end-of-image "
         f"marker)"),
        (["--checkpoint", ckpt, "--input", str(pics / "a.jpg"), "--output", str(pics)],
         f"error: output folder {pics} holds the input {pics / 'a.jpg'}; the outputs could "
         f"overwrite the pictures, choose another folder"),
    ]
    for args, line in cases:
        if "--output" not in args:
            args = args + ["--output", out]
        assert main(args + ["--no-progress"]) == 2, args
        assert _error(capsys) == line


@NO_CUDA
def test_infer_unavailable_device(run, capsys, tmp_path):
    assert _tool("infer").main(["--checkpoint", str(run["checkpoint"]), "--input", str(PHOTO),
                                "--output", str(tmp_path), "--device", "cuda"]) == 2
    assert _error(capsys) == f"error: --device: {CUDA_MISSING}"


def test_infer_disk_full(run, capsys, tmp_path, disk_full):
    out = tmp_path / "out"
    assert _tool("infer").main(["--checkpoint", str(run["checkpoint"]), "--input", str(PHOTO),
                                "--output", str(out), "--no-progress"]) == 2
    assert _error(capsys) == (f"error: no space left on device while writing "
                              f"{out / 'drawings' / 'grace_hopper.jpg'}")
    _no_temp_files(out)


# --------------------------------------------------------------------------- train


def test_train_errors(run, capsys, tmp_path):
    main = _train_main()
    cfg = str(run["config"])
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(PHOTO.read_bytes()[:64])
    cases = [
        (["--config", str(tmp_path / "none.yaml")],
         f"error: config file not found: {tmp_path / 'none.yaml'}"),
        (["--config", str(binary)],
         f"error: {binary}: not a UTF-8 text file (expected a YAML config; byte 0 is 0xff)"),
        (["--config", cfg, "train.device=banana"], f"error: {cfg}: train.device: {BAD_DEVICE}"),
        (["--config", cfg, "--resume", str(tmp_path / "none.pt")],
         f"error: --resume: checkpoint not found: {tmp_path / 'none.pt'}"),
        (["--config", cfg, "--resume", "auto", "--overwrite"],
         f"error: resume='auto' and overwrite: choose one (--resume continues the run in "
         f"{run['tmp'] / 'train_run'}, --overwrite replaces it)"),
    ]
    for args, line in cases:
        assert main(args) == 2, args
        assert _error(capsys) == line


@NO_CUDA
def test_train_unavailable_device(run, capsys):
    assert _train_main()(["--config", str(run["config"]), "train.device=cuda"]) == 2
    assert _error(capsys) == f"error: train.device: {CUDA_MISSING}"


def test_train_refuses_an_existing_run_then_overwrites(run, capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    args = ["--config", str(run["config"]), f"train.output_dir={out}", "--no-val"]
    assert _train_main()(args) == 2
    assert _error(capsys) == (
        f"error: {out} already holds a run (metrics.jsonl); to continue it pass --resume auto, "
        f"to start another choose a new train.output_dir=<folder>, or pass --overwrite to "
        f"replace it")
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'  # untouched
    assert _train_main()(args + ["--overwrite"]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(rf"done: 1 steps in \d+ s -> {re.escape(str(out))} ?", printed), printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 1 and "loss" in records[0]  # the old record is gone


def test_train_bad_data(capsys, broken_coco_config):
    config, coco = broken_coco_config
    assert _train_main()(["--config", str(config), "--no-val"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {coco / 'train.json'}: not a COCO file: missing field 'annotations'")


def test_train_disk_full(run, capsys, tmp_path, disk_full):
    out = tmp_path / "run"
    assert _train_main()(["--config", str(run["config"]), f"train.output_dir={out}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: no space left on device while writing {out / 'config.yaml'}")
    _no_temp_files(out)


def test_train_exit_codes_of_interrupts_and_divergence(run, capsys, monkeypatch):
    from aehg.engine import trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    assert trainer.main(["--config", str(run["config"])]) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def diverged(*args, **kwargs):
        raise trainer.NonFiniteLossError("non-finite loss at step 3 (epoch 0): heatmap=nan")

    monkeypatch.setattr(trainer, "train", diverged)
    assert trainer.main(["--config", str(run["config"])]) == 3
    assert _error(capsys) == "error: non-finite loss at step 3 (epoch 0): heatmap=nan"


# --------------------------------------------------------------------------- convert_vg


def _vg_args(scene_graphs: Path, out: Path) -> list[str]:
    return ["--scene-graphs", str(scene_graphs), "--image-data",
            str(VG / "image_data_first100.json"), "--vocab",
            str(VG / "VG-SGG-dicts-with-attri.json"), "--out", str(out)]


def _convert_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as info:
        _tool("convert_vg").main(args)
    assert info.value.code == 2
    return _error(capsys)


def test_convert_vg_errors(capsys, tmp_path):
    graphs = json.loads((VG / "scene_graphs_first100.json").read_text())[:2]
    first = graphs[0]["objects"][0]
    del first["x"]
    no_x = tmp_path / "no_x.json"
    no_x.write_text(json.dumps(graphs))
    truncated = tmp_path / "truncated.json"
    truncated.write_text((VG / "scene_graphs_first100.json").read_text()[:1000])
    out = tmp_path / "out"
    assert _convert_error(capsys, _vg_args(tmp_path / "none.json", out)) == \
        f"error: scene graph file not found: {tmp_path / 'none.json'}"
    line = _convert_error(capsys, _vg_args(truncated, out))
    assert line.startswith(f"error: {truncated}: not a JSON file (")
    assert _convert_error(capsys, _vg_args(no_x, out)) == \
        f"error: {no_x}: image id 1, object id {first['object_id']}: missing field 'x'"
    assert not out.exists()


def test_convert_vg_disk_full(capsys, tmp_path, disk_full):
    graphs = tmp_path / "graphs.json"
    graphs.write_text(json.dumps(json.loads((VG / "scene_graphs_first100.json")
                                            .read_text())[:3]))
    out = tmp_path / "out"
    # 3 images: no room for the default 5,000 validation images.
    assert _convert_error(capsys, [*_vg_args(graphs, out), "--num-val", "1"]) == \
        f"error: no space left on device while writing {out / 'vg150_train.json'}"
    assert not (out / "vg150_train.json").exists()
    _no_temp_files(out)


# --------------------------------------------------------------------------- make_synthetic


def test_make_synthetic_errors(capsys, tmp_path):
    main = _tool("make_synthetic").main
    users = tmp_path / "mydata"
    (users / "images" / "train").mkdir(parents=True)
    (users / "images" / "train" / "holiday.png").write_bytes(b"mine")
    cases = [
        (["--config", str(tmp_path / "none.yaml")],
         f"error: config file not found: {tmp_path / 'none.yaml'}"),
        (["--root", str(tmp_path / "s"), "data.synthetic.num_train=many"],
         "error: <defaults>: data.synthetic.num_train: expected int, got 'many'"),
        (["--root", str(users), "--num-train", "2", "--num-val", "1"],
         f"error: {users}: refusing to write synthetic data into a folder aehg did not create "
         f"(it holds 1 entry: images; no .aehg-synthetic marker or aehg spec.json); nothing "
         f"was changed. Choose a new or empty folder for data.root / --root"),
    ]
    for args, line in cases:
        assert main(args) == 2, args
        assert _error(capsys) == line
    assert (users / "images" / "train" / "holiday.png").read_bytes() == b"mine"


def test_make_synthetic_disk_full(capsys, tmp_path, disk_full):
    root = tmp_path / "syn"
    assert _tool("make_synthetic").main(["--root", str(root), "--num-train", "2",
                                         "--num-val", "1", "--image-size", "64"]) == 2
    assert _error(capsys) == (f"error: no space left on device while writing "
                              f"{root / '.aehg-synthetic'}")
    _no_temp_files(root)


# --------------------------------------------------------------------------- Ctrl-C


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("name, patched", [
    ("eval", "load_config"), ("infer", "list_images"), ("make_synthetic", "load_config"),
    ("convert_vg", "convert_visual_genome")])
def test_ctrl_c_prints_interrupted_and_exits_130(name, patched, run, capsys, monkeypatch,
                                                 tmp_path):
    tool = _tool(name)
    monkeypatch.setattr(tool, patched, _interrupt)
    args = {"eval": ["--config", str(run["config"]), "--checkpoint", str(run["checkpoint"])],
            "infer": ["--checkpoint", str(run["checkpoint"]), "--input", str(PHOTO),
                      "--output", str(tmp_path)],
            "make_synthetic": ["--root", str(tmp_path / "s")],
            "convert_vg": _vg_args(VG / "scene_graphs_first100.json", tmp_path / "vg")}[name]
    if name == "convert_vg":
        with pytest.raises(SystemExit) as info:
            tool.main(args)
        assert info.value.code == 130
    else:
        assert tool.main(args) == 130
    assert capsys.readouterr().err == "interrupted\n"


# --------------------------------------------------------------------------- debug, bugs


def test_debug_flag_and_variable_show_the_traceback(run, capsys, tmp_path, monkeypatch):
    args = ["--config", str(run["config"]), "--checkpoint", str(tmp_path / "none.pt")]
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _tool("eval").main(args + ["--debug"])
    monkeypatch.setenv("AEHG_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _tool("eval").main(args)
    with pytest.raises(SystemExit, match="^2$"):  # argparse's own usage errors stay as they are
        _tool("eval").main(["--config"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: argument --config: expected one argument")
    monkeypatch.setenv("AEHG_DEBUG", "0")
    assert _tool("eval").main(args) == 2
    assert _error(capsys) == f"error: checkpoint not found: {tmp_path / 'none.pt'}"


def test_a_bug_keeps_its_traceback(run, monkeypatch, capsys):
    tool = _tool("eval")

    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(tool, "evaluate_checkpoint", bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        tool.main(["--config", str(run["config"]), "--checkpoint", str(run["checkpoint"])])
    assert capsys.readouterr().err == ""
