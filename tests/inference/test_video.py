"""Video and webcam inference: annotated video, one JSON line per frame, bad inputs."""

from __future__ import annotations

import errno
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import aehg.inference.video as video
from aehg.checkpoint import save_checkpoint
from aehg.config import config_from_dict, config_to_dict
from aehg.export import from_node_link, graphs_equal
from aehg.inference import (
    Predictor,
    VideoReadError,
    camera_index,
    input_kind,
    run_video,
)
from aehg.models import build_model

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "images" / "grace_hopper.jpg"


def _checkpoint(folder: Path, kind: str) -> Path:
    """A tiny randomly initialised model of ``kind`` (synthetic data names its parts/classes)."""
    pose = kind == "pose"
    cfg = config_from_dict({
        "model": {"num_stacks": 1, "channels": 16, "depth": 2, "num_classes": 7 if pose else 3,
                  "num_link_classes": 0 if pose else 2, "tag_per_class": pose,
                  "box_size": not pose, "embedding_dim": 1 if pose else 4},
        "data": {"kind": kind, "source": "synthetic", "root": str(folder / "data"),
                 "input_size": 64, "output_size": 16,
                 "synthetic": {"kind": "pose" if pose else "graph", "num_object_classes": 3,
                               "num_link_classes": 2}},
        "eval": {"detection_threshold": 0.2, "link_threshold": 0.2,
                 "max_distance": 100.0}})  # random tags: a wide gate gives links
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for head in model.heads:  # make the random model fire somewhere
        nn.init.normal_(head.weight, std=0.3)
    path = folder / f"{kind}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video_ckpt")
    return {kind: _checkpoint(folder, kind) for kind in ("pose", "relations")}


def _write_video(path: Path, frames: int, fourcc: str = "mp4v", size=(96, 80)) -> Path:
    """A short clip: the photo shrunk and panned one step per frame (distinct frames)."""
    w, h = size
    photo = cv2.resize(cv2.imread(str(PHOTO)), (2 * w, 2 * h))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h))
    assert writer.isOpened(), f"no {fourcc} writer in this OpenCV"
    for i in range(frames):
        writer.write(np.ascontiguousarray(photo[4 * i:4 * i + h, 6 * i:6 * i + w]))
    writer.release()
    return path


def _read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.mark.parametrize("kind", ["pose", "relations"])
def test_video_gives_an_annotated_frame_and_a_json_line_per_frame(checkpoints, tmp_path, kind,
                                                                   capsys):
    clip = _write_video(tmp_path / "clip.mp4", 5)
    predictor = Predictor(None, checkpoints[kind], device="cpu", batch_size=2)  # 2+2+1 frames
    out = tmp_path / "out"
    done = run_video(predictor, clip, out, progress=True)
    bar = capsys.readouterr().err
    assert "5/5" in bar and "frame" in bar  # the bar counts frames, total = the frame count
    assert (done.frames, done.video, done.frames_file) == (5, out / "clip.mp4", out / "clip.jsonl")
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip.mp4"]  # no temp left
    annotated = _read_frames(done.video)
    assert len(annotated) == 5
    # 96 x 80 enlarged to 512 x 427 (+1 row: MPEG-4 wants even sides), legend on the right.
    assert annotated[0].shape[0] == 428 and annotated[0].shape[1] > 512 + 50
    # Each line is what the per-picture graph file holds for that frame as a picture.
    lines = [json.loads(line) for line in done.frames_file.read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == [0, 1, 2, 3, 4]
    assert [rec["time"] for rec in lines] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    frames = _read_frames(clip)
    instances = links = 0
    for i, (rec, frame) in enumerate(zip(lines, frames, strict=True)):
        expected = predictor.predict(frame, image_id=i)  # the frame as a picture
        expected.graph.graph["file_name"] = "clip.mp4"
        got = from_node_link(rec["graph"])
        assert got.graph == {"height": 80, "width": 96, "image_id": i, "file_name": "clip.mp4"}
        assert graphs_equal(got, expected.graph, atol=1e-5)
        instances += expected.graph.number_of_nodes()
        links += expected.graph.number_of_edges()
    assert (done.instances, done.links) == (instances, links)
    assert instances > 0
    if kind == "relations":
        assert links > 0


def _interrupt_on_second_batch(predictor):
    """Make ``predictor`` raise KeyboardInterrupt at its second batch (Ctrl-C mid-video);
    returns the list of frame ids each batch call received."""
    calls = []

    def stop(images, ids=None):
        calls.append(ids)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return Predictor.predict_batch(predictor, images, ids)

    predictor.predict_batch = stop
    return calls


def test_max_frames_and_an_interrupted_video_leaves_nothing(checkpoints, tmp_path):
    clip = _write_video(tmp_path / "clip.mp4", 6)
    predictor = Predictor(None, checkpoints["pose"], device="cpu", batch_size=2)
    done = run_video(predictor, clip, tmp_path / "first", progress=False, max_frames=3)
    assert done.frames == 3 and len(_read_frames(done.video)) == 3
    assert len(done.frames_file.read_text().splitlines()) == 3

    calls = _interrupt_on_second_batch(predictor)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_video(predictor, clip, out, progress=False)
    assert calls == [[0, 1], [2, 3]]
    assert list(out.iterdir()) == []  # neither half a video nor its temp files


def test_a_camera_runs_until_ctrl_c_and_keeps_the_frames_so_far(checkpoints, tmp_path,
                                                                monkeypatch):
    clip = _write_video(tmp_path / "clip.mp4", 6)
    real = cv2.VideoCapture

    def capture(source, *args):  # camera 0 plays the clip (no webcam on a test machine)
        return real(str(clip) if source == 0 else source, *args)

    monkeypatch.setattr(video.cv2, "VideoCapture", capture)
    predictor = Predictor(None, checkpoints["pose"], device="cpu", batch_size=2)
    _interrupt_on_second_batch(predictor)
    out = tmp_path / "out"
    done = run_video(predictor, "0", out, progress=False)
    assert done.interrupted and done.frames == 2
    assert (done.video, done.frames_file) == (out / "camera0.mp4", out / "camera0.jsonl")
    assert sorted(p.name for p in out.iterdir()) == ["camera0.jsonl", "camera0.mp4"]
    assert len(_read_frames(done.video)) == 2
    lines = [json.loads(line) for line in done.frames_file.read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == [0, 1]
    assert lines[0]["graph"]["graph"]["file_name"] == "camera0"


def test_a_failed_write_names_the_output_and_leaves_nothing(checkpoints, tmp_path, monkeypatch):

    clip = _write_video(tmp_path / "clip.mp4", 3)
    written = []

    def full(path, line):
        if written:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}")
        written.append(line)

    monkeypatch.setattr(video, "append_line", full)
    out = tmp_path / "out"
    predictor = Predictor(None, checkpoints["pose"], device="cpu", batch_size=2)
    with pytest.raises(OSError) as info:
        run_video(predictor, clip, out, progress=False)
    assert str(info.value) == (f"[Errno 28] no space left on device while writing "
                               f"{out / 'clip.jsonl'}")
    assert list(out.iterdir()) == []


def test_video_bad_inputs_name_the_path(checkpoints, tmp_path):
    predictor = Predictor(None, checkpoints["pose"], device="cpu")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with pytest.raises(VideoReadError) as info:
        run_video(predictor, garbage, tmp_path / "o1", progress=False)
    assert str(info.value) == (f"cannot open video file {garbage} (not a video OpenCV reads, "
                               f"or a video without frames)")
    empty = _write_video(tmp_path / "empty.avi", 0, fourcc="MJPG")
    assert cv2.VideoCapture(str(empty)).isOpened()  # opens, but holds no frame
    with pytest.raises(VideoReadError) as info:
        run_video(predictor, empty, tmp_path / "o2", progress=False)
    assert str(info.value) == f"video file {empty} has no frames (OpenCV read none)"
    assert not (tmp_path / "o2" / "empty.mp4").exists()
    assert list((tmp_path / "o2").iterdir()) == []  # the temp files are gone too
    # An mp4 written without frames does not even open.
    no_frames = _write_video(tmp_path / "no_frames.mp4", 0)
    with pytest.raises(VideoReadError) as info:
        run_video(predictor, no_frames, tmp_path / "o6", progress=False)
    assert str(info.value) == (f"cannot open video file {no_frames} (not a video OpenCV reads, "
                               f"or a video without frames)")
    with pytest.raises(VideoReadError, match=r"^video file not found: .*missing\.mp4$"):
        run_video(predictor, tmp_path / "missing.mp4", tmp_path / "o3", progress=False)
    with pytest.raises(VideoReadError, match=r"^camera 97: cannot open it"):
        run_video(predictor, 97, tmp_path / "o4", progress=False)
    # The output would replace the input.
    (tmp_path / "o5").mkdir()
    clip = _write_video(tmp_path / "o5" / "clip.mp4", 2)
    with pytest.raises(ValueError, match="would overwrite the input"):
        run_video(predictor, clip, tmp_path / "o5", progress=False)
    assert len(_read_frames(clip)) == 2


def test_input_kind(tmp_path):
    assert camera_index("0") == 0 and camera_index(3) == 3 and camera_index("a0") is None
    assert input_kind("0") == "camera"
    assert input_kind(PHOTO) == "images" and input_kind(PHOTO.parent) == "images"
    assert input_kind(_write_video(tmp_path / "c.avi", 2, fourcc="MJPG")) == "video"
    # Unknown suffixes are opened: a video under another name is still a video.
    renamed = tmp_path / "clip.bin"
    _write_video(tmp_path / "c.mp4", 2).rename(renamed)
    assert input_kind(renamed) == "video"
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match=rf"^input {text}: neither a picture \(.jpg"):
        input_kind(text)
    with pytest.raises(FileNotFoundError, match=rf"^input not found: {tmp_path / 'none'} "):
        input_kind(tmp_path / "none")


def _infer_tool():
    spec = importlib.util.spec_from_file_location("aehg_tool_infer_video",
                                                  ROOT / "tools" / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_infer_tool_on_a_video(checkpoints, tmp_path, capsys):
    clip = _write_video(tmp_path / "clip.mp4", 3)
    out = tmp_path / "out"
    code = _infer_tool()(["--checkpoint", str(checkpoints["relations"]), "--input", str(clip),
                          "--output", str(out), "--no-progress", "--batch-size", "2"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.startswith("3 frame(s): ")
    assert printed.out.rstrip().endswith(f"-> {out / 'clip.mp4'}, {out / 'clip.jsonl'}")
    assert len(_read_frames(out / "clip.mp4")) == 3
    assert len((out / "clip.jsonl").read_text().splitlines()) == 3


def test_infer_tool_bad_inputs(checkpoints, tmp_path, capsys):
    main = _infer_tool()
    args = ["--checkpoint", str(checkpoints["pose"]), "--output", str(tmp_path / "out"),
            "--no-progress", "--input"]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01garbage" * 300)
    empty = _write_video(tmp_path / "empty.avi", 0, fourcc="MJPG")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    expected = {garbage: f"error: cannot open video file {garbage}",
                empty: f"error: video file {empty} has no frames",
                text: f"error: input {text}: neither a picture",
                tmp_path / "none.mp4": f"error: input not found: {tmp_path / 'none.mp4'}"}
    for path, message in expected.items():
        assert main(args + [str(path)]) == 2
        assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "out").exists()
