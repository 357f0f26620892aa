import json
import os

import pytest

from aehg.io import atomic_write, write_json, write_text


def test_write_json_and_text(tmp_path):
    p = write_json(tmp_path / "a" / "r.json", {"x": [1, 2]})
    assert json.loads(p.read_text()) == {"x": [1, 2]}
    write_text(p, "hello")
    assert p.read_text() == "hello"
    assert sorted(os.listdir(p.parent)) == ["r.json"]


def test_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_old_content(tmp_path):
    p = write_text(tmp_path / "keep.txt", "old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_read_json_errors_name_the_file(tmp_path):
    from aehg.io import read_json

    assert read_json(write_json(tmp_path / "ok.json", [1])) == [1]
    with pytest.raises(FileNotFoundError, match=r"results file not found: .*nope\.json"):
        read_json(tmp_path / "nope.json", "results")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: not a JSON file"):
        read_json(tmp_path / "bad.json")


def test_disk_full_part_way_names_the_destination(tmp_path):
    import errno

    p = write_text(tmp_path / "keep.txt", "old")

    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(p, full_disk)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno 28] no space left on device while writing {p}"
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value.__cause__) == "[Errno 28] No space left on device"
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_other_os_errors_name_the_destination(tmp_path):
    import errno

    def broken(f):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "x.bin", broken)
    assert str(info.value) == f"[Errno 5] input/output error while writing {tmp_path / 'x.bin'}"
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError) as info:  # a file where the folder should be
        write_text(tmp_path / "file" / "y.txt", "x")
    assert str(info.value) == (f"[Errno 17] file exists while creating the folder "
                               f"{tmp_path / 'file'}")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_temp_file_name_follows_the_pattern_and_stale_ones_are_removed(tmp_path):
    from aehg.io import TEMP_FILE_PATTERN, remove_stale_temp_files

    seen = []
    atomic_write(tmp_path / "last.pt", lambda f: seen.extend(os.listdir(tmp_path)))
    (name,) = seen
    match = TEMP_FILE_PATTERN.fullmatch(name)
    assert match is not None and match["name"] == "last.pt", name

    stale = [".last.pt.k2x9_a0q.tmp", ".config.yaml.abcdefgh.tmp", ".a.b.c.01234567.tmp"]
    others = ["x.tmp", ".x.tmp", ".last.pt.abc.tmp", ".last.pt.ABCDEFGH.tmp",
              "last.pt.abcdefgh.tmp", ".last.pt.abcdefgh.tmp.bak", ".last.pt.abcdefgh.tmpx",
              "notes.txt"]
    for n in stale + others:
        (tmp_path / n).write_text(n)
    (tmp_path / ".folder.abcdefgh.tmp").mkdir()                    # a folder: left alone
    (tmp_path / ".link.abcdefgh.tmp").symlink_to(tmp_path / "notes.txt")  # a symlink: too
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".deep.abcdefgh.tmp").write_text("")      # not recursive

    removed = remove_stale_temp_files(tmp_path)
    assert removed == sorted(tmp_path / n for n in stale)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [*others, "last.pt", ".folder.abcdefgh.tmp", ".link.abcdefgh.tmp", "sub"])
    assert all((tmp_path / n).read_text() == n for n in others)
    assert os.listdir(tmp_path / "sub") == [".deep.abcdefgh.tmp"]
    assert remove_stale_temp_files(tmp_path) == []
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_append_line_writes_whole_records_and_undoes_a_partial_one(tmp_path, monkeypatch):
    import errno

    from aehg.io import append_line

    path = tmp_path / "metrics.jsonl"
    append_line(path, '{"step": 1}')
    append_line(path, '{"step": 2}')
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'

    calls = []
    real_write = os.write

    def full_disk(fd, data):
        calls.append(bytes(data))
        real_write(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError) as info:
        append_line(path, '{"step": 3}')
    monkeypatch.undo()
    assert calls == [b'{"step": 3}\n']                  # record and newline in one call
    assert str(info.value) == f"[Errno 28] no space left on device while writing {path}"
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'  # the half record was cut off
    with pytest.raises(ValueError, match=r"metrics\.jsonl: a record must be one line"):
        append_line(path, "a\nb")
