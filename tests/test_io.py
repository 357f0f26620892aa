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
