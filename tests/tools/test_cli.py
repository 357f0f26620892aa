"""aehg.cli: which failures are expected, the one line each gives, exit codes, debug mode."""

from __future__ import annotations

import argparse
import errno

import pytest

from aehg.cli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    add_debug_argument,
    debug_enabled,
    describe_error,
    run_tool,
)
from aehg.config import ConfigError
from aehg.data.coco import DataFormatError, UnreadableImageError


@pytest.fixture(autouse=True)
def _no_debug_from_the_environment(monkeypatch):
    monkeypatch.delenv("AEHG_DEBUG", raising=False)


def _raise(exc):
    def body():
        raise exc
    return body


def _torch_style_disk_full() -> RuntimeError:
    """What torch.save raises on a full disk: its own error, the OSError only as context."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos "
                               "64 vs 0") from None  # no __cause__, but __context__ stays
    except RuntimeError as exc:
        exc.__suppress_context__ = False
        return exc


@pytest.mark.parametrize("exc, line", [
    (ConfigError("a.yaml: model.num_stacks: expected int, got 'two'"),
     "a.yaml: model.num_stacks: expected int, got 'two'"),
    (DataFormatError("ann.json: annotation id 7: field 'keypoints': expected 51 numbers"),
     "ann.json: annotation id 7: field 'keypoints': expected 51 numbers"),
    (UnreadableImageError("img/1.jpg: truncated JPEG"), "img/1.jpg: truncated JPEG"),
    (FileNotFoundError("checkpoint not found: run/last.pt"), "checkpoint not found: run/last.pt"),
    (FileExistsError("run already holds a run; pass --resume auto"),
     "run already holds a run; pass --resume auto"),
    # Raised by the system: errno and file name.
    (PermissionError(errno.EACCES, "Permission denied", "run/config.yaml"),
     "permission denied: run/config.yaml"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.yaml"),
     "file not found: x.yaml"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "out"), "is a directory: out"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"),
     "invalid cross-device link: a -> b"),
    # Restated by aehg.io: errno and a message that names the destination.
    (OSError(errno.EACCES, "permission denied while writing out/results.json"),
     "permission denied while writing out/results.json"),
    (OSError(errno.ENOSPC, "no space left on device while writing run/last.pt"),
     "no space left on device while writing run/last.pt"),
    (OSError(errno.ENOSPC, "No space left on device", "run/metrics.jsonl"),
     "no space left on device while writing run/metrics.jsonl"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    # Several lines become one.
    (ValueError("checkpoint c.pt does not fit this model:\n  missing keys (1): a.b\n"),
     "checkpoint c.pt does not fit this model: missing keys (1): a.b"),
    (ValueError(), "ValueError"),
])
def test_describe_error(exc, line):
    assert describe_error(exc) == line


def test_disk_full_behind_a_library_error():
    exc = _torch_style_disk_full()
    assert describe_error(exc) == ("no space left on device ([enforce fail at "
                                   "inline_container.cc:664] . unexpected pos 64 vs 0)")


@pytest.mark.parametrize("exc, line", [
    (ConfigError("c.yaml: train.device: expected auto, cpu, cuda, cuda:N or mps, got 'x'"),
     "error: c.yaml: train.device: expected auto, cpu, cuda, cuda:N or mps, got 'x'"),
    (OSError(errno.ENOSPC, "no space left on device while writing o/a.json"),
     "error: no space left on device while writing o/a.json"),
    (PermissionError(errno.EACCES, "Permission denied", "o/a.json"),
     "error: permission denied: o/a.json"),
])
def test_expected_failures_give_one_line_and_exit_2(exc, line, capsys):
    assert run_tool(_raise(exc)) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_disk_full_wrapped_by_torch_is_expected(capsys):
    assert run_tool(_raise(_torch_style_disk_full())) == EXIT_ERROR
    assert capsys.readouterr().err == ("error: no space left on device ([enforce fail at "
                                       "inline_container.cc:664] . unexpected pos 64 vs 0)\n")


def test_success_interrupt_and_tool_codes(capsys):
    assert run_tool(lambda: None) == 0
    assert run_tool(lambda: 5) == 5
    assert run_tool(_raise(KeyboardInterrupt())) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"

    class Diverged(RuntimeError):
        pass

    assert run_tool(_raise(Diverged("loss is nan")), exit_codes={Diverged: 3}) == 3
    assert capsys.readouterr().err == "error: loss is nan\n"


@pytest.mark.parametrize("exc", [TypeError("bad operand"), KeyError("x"), IndexError("i"),
                                 RuntimeError("CUDA error: illegal memory access"),
                                 AssertionError("invariant")])
def test_bugs_keep_their_traceback(exc, capsys):
    with pytest.raises(type(exc)):
        run_tool(_raise(exc))
    assert capsys.readouterr().err == ""


def test_debug_lets_everything_through(monkeypatch, capsys):
    with pytest.raises(ConfigError):
        run_tool(_raise(ConfigError("c.yaml: x: bad")), debug=True)
    with pytest.raises(KeyboardInterrupt):
        run_tool(_raise(KeyboardInterrupt()), debug=True)
    monkeypatch.setenv("AEHG_DEBUG", "1")
    assert debug_enabled()
    with pytest.raises(OSError, match="no space left"):
        run_tool(_raise(OSError(errno.ENOSPC, "no space left on device while writing a")))
    assert capsys.readouterr().err == ""
    for off in ("0", ""):
        monkeypatch.setenv("AEHG_DEBUG", off)
        assert not debug_enabled()
        assert run_tool(_raise(ValueError("v"))) == EXIT_ERROR
    assert capsys.readouterr().err == "error: v\nerror: v\n"


def test_debug_argument():
    parser = argparse.ArgumentParser()
    add_debug_argument(parser)
    assert parser.parse_args([]).debug is False
    assert parser.parse_args(["--debug"]).debug is True
