"""Progress display of training: the bar's total, and log lines when stderr is not a terminal."""

import io
import logging
import re
import types

import pytest
from tqdm import tqdm

import aehg.engine.trainer as trainer
from aehg.engine import train


def _cfg(tiny_config, tmp_path, *extra):
    # 16 images, batch 4: 4 steps per epoch.
    return tiny_config(tmp_path / "run", "data.synthetic.num_val=2", *extra)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def bars(monkeypatch):
    """Every bar the trainer opens, drawn on a fake terminal."""
    made = []

    class Recording(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trainer, "tqdm", Recording)
    # The trainer's view of stderr (pytest puts its own capture back into sys.stderr before
    # each test runs).
    monkeypatch.setattr(trainer, "sys", types.SimpleNamespace(stderr=_Terminal()))
    return made


@pytest.mark.parametrize("extra, total", [
    (("train.epochs=3", "train.max_steps=6"), 6),     # the step budget
    (("train.epochs=2",), 8),                         # epochs × steps per epoch
])
def test_bar_total_is_the_step_budget(tmp_path, tiny_config, bars, extra, total):
    summary = train(_cfg(tiny_config, tmp_path, *extra), validate=False)
    (bar,) = bars
    assert bar.total == total and bar.n == summary["step"] == total


def test_time_limited_bar_counts_minutes(tmp_path, tiny_config, bars):
    summary = train(_cfg(tiny_config, tmp_path, "train.epochs=1", "train.max_minutes=600"),
                    validate=False)
    (bar,) = bars
    assert bar.total == 600 and bar.unit == "min"
    # The bar stands at the minutes elapsed (a few seconds of a 600-minute budget), not at
    # the 4 steps, which the postfix shows.
    assert summary["step"] == 4 and 0 < bar.n < 1
    assert "step 4" in bar.postfix


def test_no_bar_but_a_line_per_log_interval_without_a_terminal(tmp_path, tiny_config, caplog,
                                                               capsys):
    # pytest's captured stderr is not a terminal. 12 steps, log_interval 4: lines at 4, 8, 12.
    cfg = _cfg(tiny_config, tmp_path, "train.epochs=3", "train.log_interval=4")
    with caplog.at_level(logging.INFO, logger="aehg.train"):
        train(cfg, validate=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split()[1] for line in lines] == ["4/12", "8/12", "12/12"]
    for line in lines:
        assert re.fullmatch(r"step \d+/12  elapsed \d+:\d\d  ETA \d+:\d\d  loss \S+  "
                            r"lr \d\.\d\de-\d\d  epoch \d", line), line
    assert lines[-1].split("ETA ")[1].startswith("0:00")
    err = capsys.readouterr().err
    assert "it/s" not in err and "train:" not in err and "|" not in err
