"""Inference on a video or a webcam: an annotated video and one JSON line per frame
(docs/design.md §8).

:func:`input_kind` tells what ``tools/infer.py --input`` points at (pictures, a video, a
camera); :func:`run_video` predicts every frame, ``predictor.batch_size`` frames per forward
pass, and writes the frames drawn as :func:`aehg.inference.run.draw_prediction` draws pictures
(with one fixed legend, so that every frame has one size) and, per frame, the graph that
``graphs/name.json`` would hold for that frame as a picture.

Example:
    >>> summary = run_video(Predictor(None, "best.pt"), "clip.mp4", "out/")
    >>> summary.frames, summary.video, summary.frames_file
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from aehg.export import to_node_link
from aehg.inference.io import IMAGE_SUFFIXES
from aehg.inference.predictor import Predictor
from aehg.inference.run import draw_prediction
from aehg.io import append_line
from aehg.visualize import LegendEntry

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoReadError",
    "VideoSummary",
    "camera_index",
    "check_video",
    "input_kind",
    "run_video",
]

log = logging.getLogger(__name__)

# Suffixes taken for videos without opening them; a file with another suffix is still tried as
# a picture, then as a video, before it is refused.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".3gp", ".ts", ".mts", ".ogv")
FOURCC = "mp4v"  # MPEG-4 Part 2 in .mp4: written by every OpenCV build with FFmpeg (H.264 not)
DEFAULT_FPS = 25.0  # when the source does not say (cameras, some containers)


class VideoReadError(OSError):
    """A video or camera cannot be opened or has no frame; the message names it."""


@dataclass
class VideoSummary:
    """What :func:`run_video` did.

    Attributes:
        frames: frames predicted and written.
        instances: people or objects over all frames.
        links: graph edges over all frames.
        video: the annotated video.
        frames_file: the JSON-lines file, one line per frame.
        fps: frame rate of the annotated video.
        interrupted: a camera stream stopped with Ctrl-C (the outputs hold the frames so far).
    """

    frames: int
    instances: int
    links: int
    video: Path
    frames_file: Path
    fps: float
    interrupted: bool = False


def camera_index(source: str | int | os.PathLike[str]) -> int | None:
    """The webcam index a ``--input`` names (an integer such as ``0``), else None."""
    if isinstance(source, int):
        return source
    text = os.fspath(source).strip()
    return int(text) if text.isdigit() else None


def _opens_as_video(path: Path) -> bool:
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened()) and bool(cap.read()[0])
    finally:
        cap.release()


def input_kind(source: str | int | os.PathLike[str]) -> str:
    """What an inference input is: ``"images"`` (a picture or a folder), ``"video"`` or
    ``"camera"`` (an integer: a webcam index).

    Known picture and video suffixes (:data:`~aehg.inference.io.IMAGE_SUFFIXES`,
    :data:`VIDEO_SUFFIXES`) decide without reading the file; a file with another suffix is
    a picture if OpenCV has a reader for it, else a video if OpenCV opens it and reads a frame.

    Raises:
        FileNotFoundError: the path does not exist (``input not found: …``).
        ValueError: a file that is neither a picture nor a video OpenCV reads.
    """
    if camera_index(source) is not None:
        return "camera"
    path = Path(source)
    if path.is_dir():
        return "images"
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path} (expected an image, a folder, a video "
                                f"or a camera index)")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "images"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if path.is_file():
        if cv2.haveImageReader(str(path)):
            return "images"
        if _opens_as_video(path):
            return "video"
    raise ValueError(f"input {path}: neither a picture ({', '.join(IMAGE_SUFFIXES)}), a folder "
                     f"nor a video OpenCV reads ({', '.join(VIDEO_SUFFIXES)}, …)")


def _open(source: str | int | os.PathLike[str]) -> tuple[cv2.VideoCapture, str, str]:
    """The capture, the output name stem and how errors name the source."""
    cam = camera_index(source)
    if cam is not None:
        cap = cv2.VideoCapture(cam)
        if not cap.isOpened():
            cap.release()
            raise VideoReadError(f"camera {cam}: cannot open it (no such webcam here, or it is "
                                 f"in use)")
        return cap, f"camera{cam}", f"camera {cam}"
    path = Path(source)
    if not path.is_file():
        raise VideoReadError(f"video file not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(f"cannot open video file {path} (not a video OpenCV reads, or a "
                             f"video without frames)")
    return cap, path.stem, f"video file {path}"


def check_video(source: str | int | os.PathLike[str]) -> None:
    """Open a video or camera and read one frame, so that a bad input fails before a model
    is loaded.

    Raises:
        VideoReadError: missing, not a video OpenCV reads, or without frames (names it).
    """
    cap, _, what = _open(source)
    try:
        if not cap.read()[0]:
            raise VideoReadError(f"{what} has no frames (OpenCV read none)")
    finally:
        cap.release()


def _fixed_legend(predictor: Predictor) -> list[LegendEntry]:
    """Every part (pose) or every class and predicate (relations): one legend for all frames,
    so that the annotated frames keep one size."""
    cfg, info = predictor.cfg, predictor.info

    def name(names: list[str] | None, i: int) -> str:
        return names[i] if names is not None and i < len(names) else str(i)

    if cfg.data.kind == "relations":
        entries = [LegendEntry("class", c, name(info.class_names, c))
                   for c in range(cfg.model.num_classes)]
    else:
        entries = [LegendEntry("part", c, name(info.class_names, c))
                   for c in range(cfg.model.num_classes)]
    entries += [LegendEntry("predicate", r, name(info.predicate_names, r))
                for r in range(cfg.model.num_link_classes)]
    return entries


def _temp_beside(path: Path) -> Path:
    """A fresh temp file name beside ``path`` with its suffix (the writer picks the container
    by suffix)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        # mkstemp creates 0600; the renamed file gets the mode a plain open() would give.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
    finally:
        os.close(fd)
    return Path(tmp)


def run_video(predictor: Predictor, source: str | int | os.PathLike[str],
              output_dir: str | os.PathLike[str], *, progress: bool = True,
              max_frames: int | None = None, fourcc: str = FOURCC) -> VideoSummary:
    """Predict every frame of a video or webcam; write an annotated video and a JSON line per
    frame.

    The output folder gets ``name.mp4`` (the frames drawn by
    :func:`~aehg.inference.run.draw_prediction`, enlarged to at least 512 px, with a legend of
    all parts or all classes and predicates; the source's frame rate) and ``name.jsonl``, one
    line per frame: ``{"frame": i, "time": i / fps, "graph": node-link}`` where the graph is
    what ``graphs/name.json`` holds for a picture (graph attributes ``image_id`` = ``frame``,
    ``file_name`` = the video's name, ``height``, ``width``). ``name`` is the video's stem, or
    ``camera0`` for camera 0. Both files are written under temp names and renamed into place
    at the end; a camera stopped with Ctrl-C keeps the frames so far, a video file interrupted
    or failing leaves no output.

    Args:
        predictor: the model and its test-time options.
        source: a video file OpenCV reads, or a camera index (``0`` or ``"0"``).
        output_dir: where the two files go (created when missing).
        progress: a tqdm bar in frames (total = the frame count when the source gives one).
        max_frames: stop after this many frames (a camera runs until Ctrl-C otherwise).
        fourcc: the four-character code of the written video.

    Raises:
        VideoReadError: the source is missing, cannot be opened, or has no frame.
        ValueError: the output would replace the input video, or ``max_frames`` < 1.
        OSError: the annotated video cannot be written (the message names it and the codec).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames: expected >= 1, got {max_frames}")
    cap, name, what = _open(source)
    try:
        return _run(predictor, cap, name, what, camera_index(source) is not None, source,
                    Path(output_dir), progress, max_frames, fourcc)
    finally:
        cap.release()


def _run(predictor: Predictor, cap: cv2.VideoCapture, name: str, what: str, camera: bool,
         source: str | int | os.PathLike[str], out_dir: Path, progress: bool,
         max_frames: int | None, fourcc: str) -> VideoSummary:
    video_path, lines_path = out_dir / f"{name}.mp4", out_dir / f"{name}.jsonl"
    if not camera and Path(source).resolve() in (video_path.resolve(), lines_path.resolve()):
        raise ValueError(f"output folder {out_dir} would overwrite the input {source}; choose "
                         f"another folder")
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    if not math.isfinite(fps) or not 0 < fps <= 1000:
        fps = DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not camera else 0
    total = count if count > 0 else None
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    file_name = Path(source).name if not camera else name
    legend = _fixed_legend(predictor)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the output folder {out_dir}: "
                                 f"{exc.strerror}") from exc
    tmp_video, tmp_lines = _temp_beside(video_path), _temp_beside(lines_path)
    writer: cv2.VideoWriter | None = None
    frames = instances = links = 0
    interrupted = False
    bar = tqdm(total=total, desc="infer", unit="frame", disable=not progress)
    try:
        while max_frames is None or frames < max_frames:
            batch: list[np.ndarray] = []
            want = predictor.batch_size if max_frames is None else min(
                predictor.batch_size, max_frames - frames)
            while len(batch) < want:
                ok, frame = cap.read()
                if not ok:
                    break
                batch.append(frame)
            if not batch:
                break
            ids = list(range(frames, frames + len(batch)))
            for i, frame, pred in zip(ids, batch, predictor.predict_batch(batch, ids),
                                      strict=True):
                pred.file_name = file_name
                pred.graph.graph["file_name"] = file_name
                drawing = draw_prediction(predictor, frame, pred, legend=legend)
                # MPEG-4 needs even sides (an odd row was silently dropped): pad one pixel.
                drawing = cv2.copyMakeBorder(drawing, 0, drawing.shape[0] % 2, 0,
                                             drawing.shape[1] % 2, cv2.BORDER_REPLICATE)
                if writer is None:
                    h, w = drawing.shape[:2]
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*fourcc),
                                             fps, (w, h))
                    if not writer.isOpened():
                        raise OSError(f"cannot write the video {video_path} (OpenCV has no "
                                      f"{fourcc!r} writer for {w}x{h} at {fps:g} fps)")
                writer.write(drawing)
                line = json.dumps({"frame": i, "time": i / fps,
                                   "graph": to_node_link(pred.graph)})
                try:
                    append_line(tmp_lines, line)
                except OSError as exc:  # name the file the user asked for, not the temp name
                    raise _named(exc, lines_path) from exc
                instances += len(pred.scores)
                links += pred.graph.number_of_edges()
            frames += len(batch)
            bar.update(len(batch))
        if frames == 0:
            raise VideoReadError(f"{what} has no frames (OpenCV read none)")
    except KeyboardInterrupt:
        if not camera or frames == 0:
            _discard(writer, tmp_video, tmp_lines)
            raise
        interrupted = True  # a camera has no end: Ctrl-C is how it stops
        log.info("stopped after %d frame(s)", frames)
    except BaseException:
        _discard(writer, tmp_video, tmp_lines)
        raise
    finally:
        bar.close()
    try:
        writer.release()  # frames > 0: the writer exists
        # OpenCV reports no failed write (a full disk): read the count back before renaming.
        check = cv2.VideoCapture(str(tmp_video))
        written = int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else -1
        check.release()
        if written != frames:
            raise OSError(f"cannot write the video {video_path} completely (it holds "
                          f"{max(written, 0)} of {frames} frames; is the disk full?)")
        for tmp, final in ((tmp_video, video_path), (tmp_lines, lines_path)):
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise _named(exc, final) from exc
    except BaseException:
        _discard(None, tmp_video, tmp_lines)
        raise
    return VideoSummary(frames, instances, links, video_path, lines_path, fps, interrupted)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` restated to name ``path`` (the destination) and the cause plainly."""
    if exc.errno is None:
        return OSError(f"{exc} while writing {path}")
    text = os.strerror(exc.errno)
    return OSError(exc.errno, f"{text[:1].lower()}{text[1:]} while writing {path}")


def _discard(writer: cv2.VideoWriter | None, *tmp: Path) -> None:
    if writer is not None:
        writer.release()
    for p in tmp:
        p.unlink(missing_ok=True)
