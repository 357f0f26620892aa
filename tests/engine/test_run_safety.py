"""Nothing lost, nothing silent: run folders, whole metrics records, stale temp files, devices.

Tiny CPU runs on synthetic data (16 images, batch 4: 4 steps per epoch, ``last.pt`` at every
epoch end).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil

import pytest
import torch

from aehg.checkpoint import load_checkpoint
from aehg.config import ConfigError
from aehg.engine import RunExistsError, init_distributed, train
from aehg.engine.trainer import RUN_FILES
from aehg.models import build_model

_RUN_EXISTS = ("{out} already holds a run ({found}); to continue it pass --resume auto, to start "
               "another choose a new train.output_dir=<folder>, or pass --overwrite to replace it")


def _cfg(tiny_config, out_dir, *extra):
    return tiny_config(
        out_dir, "train.lr=1e-3", "train.scheduler=none", "train.epochs=3",
        "train.log_interval=1", "train.device=cpu",
        # No augmentation: no data warning among the ones the tests compare.
        "data.augment.rotation=0", "data.augment.translate=0", "data.augment.scale_min=1",
        "data.augment.scale_max=1", "data.augment.flip_prob=0", *extra)


def _records(out_dir):
    """Every line of metrics.jsonl parsed (fails on a line that is not whole JSON)."""
    text = (out_dir / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _train_steps(records):
    return [r["step"] for r in records if "loss" in r]


def _data_steps(records):
    return [(r["step"], r["data/images"]) for r in records if "data/images" in r]


def _messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == "aehg.train"
            and r.levelno == level]


# --------------------------------------------------------------------------- run folders


def test_existing_run_is_refused_without_resume_and_left_untouched(tmp_path, tiny_config):
    out = tmp_path / "run"
    train(_cfg(tiny_config, out, "train.max_steps=2"), validate=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert set(before) == {"last.pt", "config.yaml", "metrics.jsonl"}

    with pytest.raises(RunExistsError) as info:
        train(_cfg(tiny_config, out, "train.max_steps=1", "train.lr=5e-4"), validate=False)
    assert str(info.value) == _RUN_EXISTS.format(out=out,
                                                 found="last.pt, config.yaml, metrics.jsonl")
    assert isinstance(info.value, FileExistsError)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("name", RUN_FILES)
def test_any_run_file_marks_a_run(tmp_path, tiny_config, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text("old")
    with pytest.raises(RunExistsError) as info:
        train(_cfg(tiny_config, out, "train.max_steps=1"), validate=False)
    assert str(info.value) == _RUN_EXISTS.format(out=out, found=name)
    # Refused before anything was written: no config.yaml, no data statistics, no checkpoint.
    assert [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_text() == "old"


def test_overwrite_replaces_the_run_without_mixing(tmp_path, tiny_config, caplog):
    out = tmp_path / "run"
    train(_cfg(tiny_config, out, "train.max_steps=3"), validate=False)
    shutil.copy(out / "last.pt", out / "best.pt")  # a best.pt of the old run
    (out / "notes.txt").write_text("mine")
    assert _train_steps(_records(out)) == [1, 2, 3]

    with caplog.at_level(logging.INFO, logger="aehg.train"):
        summary = train(_cfg(tiny_config, out, "train.max_steps=1"), validate=False,
                        overwrite=True)
    assert summary["step"] == 1
    assert _messages(caplog, logging.WARNING) == [
        f"--overwrite: replacing the run in {out} (removed last.pt, best.pt, metrics.jsonl)"]
    records = _records(out)
    assert _train_steps(records) == [1]
    assert _data_steps(records) == [(1, 4)]
    assert len(records) == 2
    assert load_checkpoint(out / "last.pt")["step"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "last.pt", "metrics.jsonl",
                                                    "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_are_refused(tmp_path, tiny_config):
    cfg = _cfg(tiny_config, tmp_path / "run")
    with pytest.raises(ValueError) as info:
        train(cfg, resume="auto", overwrite=True)
    assert str(info.value) == (f"resume='auto' and overwrite: choose one (--resume continues the "
                               f"run in {tmp_path / 'run'}, --overwrite replaces it)")
    assert not (tmp_path / "run").exists()


def test_other_files_do_not_make_a_run_and_stale_temp_files_go(tmp_path, tiny_config, caplog):
    out = tmp_path / "run"
    (out / "predictions").mkdir(parents=True)
    stale = [out / ".last.pt.k2x9_a0q.tmp", out / ".config.yaml.abcdefgh.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 4096)  # what a kill during a checkpoint write leaves
    kept = {"notes.tmp": "a", ".x.tmp": "b", ".last.pt.abc.tmp": "c", "last.pt.abcdefgh.tmp": "d"}
    for name, text in kept.items():
        (out / name).write_text(text)

    with caplog.at_level(logging.INFO, logger="aehg.train"):
        summary = train(_cfg(tiny_config, out, "train.max_steps=1"), validate=False)
    assert summary["step"] == 1
    assert not any(p.exists() for p in stale)
    assert {name: (out / name).read_text() for name in kept} == kept
    assert (out / "predictions").is_dir()
    removed = ", ".join(str(p) for p in sorted(stale))
    assert f"removed 2 temp files of an interrupted write: {removed}" in _messages(
        caplog, logging.INFO)


# --------------------------------------------------------------------------- metrics.jsonl


def test_disk_full_mid_record_then_resume_keeps_every_line_whole(tmp_path, tiny_config,
                                                                 monkeypatch):
    out = tmp_path / "run"
    # A checkpoint at every epoch end (4 steps), so that the resume starts from step 4.
    cfg = _cfg(tiny_config, out, "train.max_steps=8", "train.checkpoint_min_steps=0")
    real_write = os.write

    def full_disk(fd, data):
        # The disk fills up half-way through the record of step 7 (last.pt is at step 4).
        if bytes(data).startswith(b'{"step": 7, "epoch": 1, "lr"'):
            real_write(fd, bytes(data)[:25])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with monkeypatch.context() as m:
        m.setattr(os, "write", full_disk)
        with pytest.raises(OSError) as info:
            train(cfg, validate=False)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"[Errno 28] no space left on device while writing "
                               f"{out / 'metrics.jsonl'}")
    # The half record was cut off again at once: the file holds whole lines only.
    records = _records(out)
    assert _train_steps(records) == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(out / "last.pt")["step"] == 4

    summary = train(cfg, resume="auto", validate=False)
    assert summary["step"] == 8
    records = _records(out)
    # Steps 5 and 6 ran twice (after the checkpoint of step 4) but are logged once.
    assert _train_steps(records) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert _data_steps(records) == [(4, 16), (8, 16)]
    assert len(records) == 10


def test_partial_last_line_and_records_past_the_checkpoint_are_dropped(tmp_path, tiny_config,
                                                                       caplog):
    out = tmp_path / "run"
    train(_cfg(tiny_config, out, "train.max_steps=4"), validate=False)  # last.pt at step 4
    path = out / "metrics.jsonl"
    assert len(_records(out)) == 5                   # steps 1-4 and the epoch's data record
    with open(path, "a") as f:                       # a crash after step 5 and within step 6
        f.write('{"step": 5, "epoch": 1, "loss": 1.0}\n{"step": 6, "epo')

    with caplog.at_level(logging.INFO, logger="aehg.train"):
        summary = train(_cfg(tiny_config, out, "train.max_steps=6"), resume="auto",
                        validate=False)
    assert summary["step"] == 6
    assert _messages(caplog, logging.WARNING) == [
        f"{path}: dropped line 7: not a whole JSON record (a write cut short by a crash or a "
        f"full disk)"]
    assert (f"{path}: dropped 1 record past step 4 (logged after the resumed checkpoint; those "
            f"steps are logged again)") in _messages(caplog, logging.INFO)
    records = _records(out)
    assert _train_steps(records) == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in records if r["step"] == 5] != [1.0]  # the new record, not the old


# --------------------------------------------------------------------------- devices


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


_NO_CUDA = "{key}: 'cuda' requested but CUDA is not available on this machine (use cpu or auto)"


def test_unavailable_device_in_distributed_setup_and_train(tmp_path, tiny_config, no_accelerator):
    with pytest.raises(ConfigError) as info:
        init_distributed("cuda")
    assert str(info.value) == _NO_CUDA.format(key="train.device")
    with pytest.raises(ConfigError, match=r"^train\.device: 'mps' requested but MPS is not "
                                          r"available on this machine \(use cpu or auto\)$"):
        init_distributed("mps")
    assert init_distributed("auto")[1] == torch.device("cpu")

    cfg = _cfg(tiny_config, tmp_path / "run", "train.device=cuda:1")
    with pytest.raises(ConfigError) as info:
        train(cfg, validate=False)
    assert str(info.value) == ("train.device: 'cuda:1' requested but CUDA is not available on "
                               "this machine (use cpu or auto)")
    assert not (tmp_path / "run").exists()


def test_unavailable_device_in_predictor_and_evaluation(tmp_path, tiny_config, no_accelerator):
    from aehg.checkpoint import save_checkpoint
    from aehg.evaluation import evaluate_checkpoint
    from aehg.inference import Predictor

    cfg = _cfg(tiny_config, tmp_path / "run")
    ckpt = {"model": build_model(cfg.model).state_dict()}
    with pytest.raises(ConfigError) as info:
        Predictor(cfg, ckpt, device="cuda")
    assert str(info.value) == _NO_CUDA.format(key="device")
    assert Predictor(cfg, ckpt, device=None).device == torch.device("cpu")

    path = save_checkpoint(tmp_path / "last.pt", ckpt)
    cuda_cfg = _cfg(tiny_config, tmp_path / "run", "train.device=cuda")
    with pytest.raises(ConfigError) as info:
        evaluate_checkpoint(cuda_cfg, path, tmp_path / "eval", verbose=False, progress=False)
    assert str(info.value) == _NO_CUDA.format(key="train.device")
    with pytest.raises(ConfigError) as info:  # --device of tools/eval.py
        evaluate_checkpoint(cfg, path, tmp_path / "eval", device="cuda", verbose=False,
                            progress=False)
    assert str(info.value) == _NO_CUDA.format(key="device")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize(("min_steps", "written"), [(0, [4, 8, 12]), (5, [8, 12]), (100, [12])])
def test_epoch_end_checkpoints_wait_for_checkpoint_min_steps(tmp_path, tiny_config, monkeypatch,
                                                             min_steps, written):
    # 16 images, batch 4: an epoch is 4 steps; 3 epochs. The end of training always writes.
    import aehg.engine.trainer as trainer

    steps = []
    real_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint",
                        lambda path, state: (steps.append(state["step"]), real_save(path, state)))
    train(_cfg(tiny_config, tmp_path / "run", f"train.checkpoint_min_steps={min_steps}"),
          validate=False)
    assert steps == written
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 12
