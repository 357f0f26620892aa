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
