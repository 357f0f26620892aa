import errno
import io

import pytest
import torch

from aehg.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from aehg.models import StackedHourglass


def test_round_trip_weights_only(tmp_path):
    m = StackedHourglass(num_stacks=1, channels=8, depth=1, num_classes=3)
    path = save_checkpoint(tmp_path / "ck" / "last.pt", {"model": m.state_dict(), "step": 7,
                                                        "config": {"a": [1, 2]}})
    ck = load_checkpoint(path)
    assert ck["step"] == 7 and ck["config"] == {"a": [1, 2]}
    m2 = StackedHourglass(num_stacks=1, channels=8, depth=1, num_classes=3)
    load_model_weights(m2, ck)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left


class Evil:
    pass


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(ValueError, match="evil.pt: cannot be read as a weights-only"):
        load_checkpoint(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)


def test_other_architecture_names_mismatched_keys():
    a = StackedHourglass(num_stacks=1, channels=8, depth=1, num_classes=3)
    b = StackedHourglass(num_stacks=1, channels=8, depth=1, num_classes=5)
    with pytest.raises(ValueError, match=r"shape mismatch.*heads\.0\.weight"):
        load_model_weights(b, {"model": a.state_dict()})
    c = StackedHourglass(num_stacks=2, channels=8, depth=1, num_classes=3)
    with pytest.raises(ValueError, match=r"missing keys.*hourglasses\.1"):
        load_model_weights(c, {"model": a.state_dict()})
    with pytest.raises(ValueError, match=r"unexpected keys.*hourglasses\.1"):
        load_model_weights(a, {"model": c.state_dict()})


def test_interrupted_write_keeps_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"step": 2, "x": Boom()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class _FullDisk(io.RawIOBase):
    """A file whose disk fills up after ``room`` bytes (the bytes before still land)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            self.f.write(bytes(b)[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)


def test_disk_full_during_checkpoint_names_the_file(tmp_path, monkeypatch):
    import aehg.checkpoint
    from aehg.io import atomic_write

    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})
    monkeypatch.setattr(aehg.checkpoint, "atomic_write", lambda p, writer: atomic_write(
        p, lambda f: writer(io.BufferedWriter(_FullDisk(f, 1000)))))
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {"step": 2, "w": torch.zeros(10_000)})
    # Not torch's "[enforce fail at inline_container.cc] unexpected pos …".
    assert str(info.value) == f"[Errno 28] no space left on device while writing {path}"
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, RuntimeError)    # torch's error, chained
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
