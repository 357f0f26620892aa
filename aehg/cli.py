"""What every command-line tool shares: expected failures end in one ``error: …`` line.

A user who gives a tool a missing file, a broken annotation, a checkpoint of another model, a
full disk or a folder they may not write should read one line that names the file (and the
annotation, image or key) and get exit code 2, not a traceback. A bug keeps its traceback.

The rule for "expected" is by type, so that it holds for errors added later:

* :class:`ValueError` and its subclasses: every check of the library raises one (config keys,
  ``DataFormatError``, checkpoints that do not fit, bad arguments, unavailable devices);
* :class:`OSError` and its subclasses: missing files, permissions, an existing run directory
  (``FileExistsError``), unreadable images, a full disk;
* an exception whose cause or context is an ``OSError`` for a full disk (``ENOSPC``): torch
  reports a failed checkpoint write as a ``RuntimeError`` raised while handling it;
* the types a tool adds itself (``exit_codes``), e.g. the trainer's ``NonFiniteLossError``.

``KeyboardInterrupt`` prints ``interrupted`` and exits 130 (128 + SIGINT, the shell's code).
With ``--debug`` or the environment variable ``AEHG_DEBUG=1`` the exception propagates, so its
traceback shows.

Example:
    >>> def main(argv=None) -> int:
    ...     parser = argparse.ArgumentParser()
    ...     add_debug_argument(parser)
    ...     args = parser.parse_args(argv)
    ...     return run_tool(lambda: work(args), debug=args.debug)
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "DEBUG_ENV",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "add_debug_argument",
    "debug_enabled",
    "describe_error",
    "run_tool",
]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = "AEHG_DEBUG"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (show the traceback of an error) to a tool's parser."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {DEBUG_ENV}=1)")


def debug_enabled(flag: bool = False) -> bool:
    """True with ``--debug`` or when ``AEHG_DEBUG`` is set to anything but ``""``/``"0"``."""
    return flag or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, outermost first (each once)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _disk_full(exc: BaseException) -> OSError | None:
    """The ``ENOSPC`` error in ``exc``'s chain, if any."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return e
    return None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def describe_error(exc: BaseException) -> str:
    """The message of an expected failure as one line (without the ``error:`` prefix).

    A full disk says ``no space left on device`` and, when known, the file. An ``OSError`` from
    the system (errno and file name set) says what happened to which file; one the library
    restated (errno and a message naming the file, as :func:`aehg.io.atomic_write` raises) gives
    that message without the ``[Errno N]`` prefix. Any other exception gives its own message,
    which in this library names the file and the annotation, image or key.
    """
    full = _disk_full(exc)
    if full is not None:
        if full.filename is not None:
            return f"no space left on device while writing {os.fsdecode(full.filename)}"
        reason = _one_line(full.strerror or "")
        if reason.lower().startswith("no space left on device "):
            return reason  # restated with the file (aehg.io names the destination)
        # The system's bare text names no file; a wrapping library's message may say more.
        outer = _one_line(str(exc)) if exc is not full else ""
        return f"no space left on device ({outer})" if outer else "no space left on device"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.filename is not None:
            what = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                    errno.ENOENT: "file not found"}.get(exc.errno, (exc.strerror or "").lower())
            names = os.fsdecode(exc.filename)
            if exc.filename2 is not None:
                names += f" -> {os.fsdecode(exc.filename2)}"
            return f"{what}: {names}"
        if exc.strerror:
            return _one_line(exc.strerror)
    return _one_line(str(exc)) or type(exc).__name__


def _expected(exc: BaseException, extra: Mapping[type[BaseException], int]) -> int | None:
    """The exit code of an expected failure, or None for a bug."""
    for kind, code in extra.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, (ValueError, OSError)) or _disk_full(exc) is not None:
        return EXIT_ERROR
    return None


def run_tool(body: Callable[[], int | None], *, debug: bool = False,
             exit_codes: Mapping[type[BaseException], int] | None = None) -> int:
    """Run a tool's body; turn expected failures into one ``error: …`` line on stderr.

    Args:
        body: the tool's work; returns its exit code (None means 0).
        debug: let every exception propagate (its traceback shows); ``AEHG_DEBUG=1`` does the
            same.
        exit_codes: tool-specific expected failures and their exit codes, checked first.

    Returns:
        The body's exit code; :data:`EXIT_ERROR` (2) after an expected failure (or the code
        ``exit_codes`` gives its type); :data:`EXIT_INTERRUPTED` (130) after Ctrl-C.

    Raises:
        Exception: a bug (any exception that is not an expected failure), or every exception
            in debug mode.
    """
    debug = debug_enabled(debug)
    try:
        code = body()
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = None if debug else _expected(exc, exit_codes or {})
        if code is None:
            raise
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return code
    return 0 if code is None else int(code)
