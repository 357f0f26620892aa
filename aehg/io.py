"""Atomic file writes: a result is either the old file or the whole new one, never half."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMP_FILE_PATTERN", "append_line", "atomic_write", "read_json",
           "remove_stale_temp_files", "write_json", "write_text"]

# The temp files of atomic_write: ``.{name}.XXXXXXXX.tmp``, where the middle part is the 8
# characters tempfile.mkstemp draws from [a-z0-9_]. Only names of this form are ever removed as
# leftovers of an interrupted write.
TEMP_FILE_PATTERN = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def _os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or the one a library wrapped it around.

    torch.save turns a failed file write into ``RuntimeError: … unexpected pos …`` with the
    OSError (e.g. ENOSPC) only as its context; only such wrappers are unwrapped, so an unrelated
    error raised while handling an OSError keeps its own type.
    """
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, RuntimeError):
        seen: set[int] = set()
        inner = exc.__cause__ or exc.__context__
        while inner is not None and id(inner) not in seen:
            seen.add(id(inner))
            if isinstance(inner, OSError):
                return inner
            inner = inner.__cause__ or inner.__context__
    return None


def _write_error(exc: OSError, path: Path, doing: str = "writing") -> OSError:
    """``exc`` restated to name the destination ``path`` (not a temp file) and the cause plainly.

    ``OSError(errno, message)`` builds the matching subclass (PermissionError for EACCES, …).
    """
    if exc.errno is None:
        return OSError(f"{exc} while {doing} {path}")
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    else:
        text = exc.strerror or os.strerror(exc.errno)
        reason = text[:1].lower() + text[1:]
    return OSError(exc.errno, f"{reason} while {doing} {path}")


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> Path:
    """Call ``writer`` on a temp file beside ``path``, then ``os.replace`` it into place.

    The temp file is named ``.{name}.XXXXXXXX.tmp`` (:data:`TEMP_FILE_PATTERN`); it is removed
    when anything fails, and :func:`remove_stale_temp_files` removes the ones a killed process
    left behind.

    Args:
        path: destination file; its folder is created when missing.
        writer: writes the content to the given binary file object.

    Returns:
        The destination path.

    Raises:
        OSError: the write failed at the operating-system level (also when a library such as
            torch wrapped that error in a ``RuntimeError``). The message names ``path`` and the
            cause, e.g. ``[Errno 28] no space left on device while writing out/last.pt``; the
            original error is chained. Any other exception of ``writer`` propagates as it is.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # e.g. a file where a folder should be: name the folder, not the file never written.
        raise _write_error(exc, path.parent, "creating the folder") from exc
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        os_error = _os_error_of(exc)
        if os_error is None:
            raise
        raise _write_error(os_error, path) from exc
    return path


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files that interrupted :func:`atomic_write` calls left in ``folder``.

    Only regular files (not symlinks, not folders) directly in ``folder`` whose names match
    :data:`TEMP_FILE_PATTERN` are removed; every other file is left alone. Call it where no
    other process is writing into ``folder`` (e.g. when a run starts in its output directory).

    Args:
        folder: the folder to clean; a missing folder has nothing to remove.

    Returns:
        The removed files, sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if TEMP_FILE_PATTERN.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                # Another process may have cleaned it up in between: not an error.
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return sorted(removed)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` and a newline to ``path`` (created when missing) as one whole record.

    The bytes go to the file in one ``os.write`` call on an unbuffered append descriptor (more
    calls only if the system writes part of them). If the write fails part-way (a full disk),
    the file is cut back to its previous size, so it never ends in half a record.

    Args:
        path: the file (e.g. a JSON-lines log).
        line: one record without its newline; must not contain a newline.

    Raises:
        ValueError: ``line`` contains a newline.
        OSError: the write failed; the message names ``path`` and the cause, e.g.
            ``[Errno 28] no space left on device while writing run/metrics.jsonl``.
    """
    if "\n" in line:
        raise ValueError(f"{path}: a record must be one line, got {line[:80]!r}")
    path = Path(path)
    data = memoryview((line + "\n").encode("utf-8"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    try:
        start = os.fstat(fd).st_size
        try:
            while data:
                written = os.write(fd, data)
                data = data[written:]
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:  # pragma: no cover - the next open drops the partial line instead
                pass
            raise _write_error(exc, path) from exc
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON atomically."""
    return write_text(path, json.dumps(obj, indent=indent))


def read_json(path: str | os.PathLike[str], what: str = "JSON") -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: "<what> file not found: <path>".
        ValueError: "<path>: not a JSON file (…)".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc
