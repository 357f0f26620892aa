"""Train / val / test files of the Visual Genome converter (tests/data/visual_genome_sample)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from aehg.config import load_config
from aehg.data.visual_genome import convert_visual_genome, split_train_val_test

SAMPLE = Path(__file__).parent / "visual_genome_sample"
ROOT = Path(__file__).resolve().parents[2]
ARGS = (SAMPLE / "scene_graphs_first100.json", SAMPLE / "image_data_first100.json",
        SAMPLE / "VG-SGG-dicts-with-attri.json", SAMPLE / "xu_object_alias.txt",
        SAMPLE / "xu_predicate_alias.txt")
TOOL_ARGS = ["--scene-graphs", str(ARGS[0]), "--image-data", str(ARGS[1]), "--vocab",
             str(ARGS[2]), "--object-alias", str(ARGS[3]), "--predicate-alias", str(ARGS[4])]


@pytest.fixture(scope="module")
def data():
    return convert_visual_genome(*ARGS)[0]


def _ids(part):
    return [im["id"] for im in part["images"]]


def test_sizes_disjoint_and_complete(data):
    train, val, test = split_train_val_test(data, num_val=12, seed=3)
    assert (len(train["images"]), len(val["images"]), len(test["images"])) == (58, 12, 30)
    ids = [_ids(p) for p in (train, val, test)]
    assert not set(ids[0]) & set(ids[1]) and not set(ids[0]) & set(ids[2])
    assert not set(ids[1]) & set(ids[2])
    assert sorted(ids[0] + ids[1] + ids[2]) == sorted(_ids(data))
    # Test: the last 30 % in file order, untouched; train and val keep the file order.
    assert ids[2] == _ids(data)[70:]
    position = {i: k for k, i in enumerate(_ids(data))}
    for part in ids[:2]:
        assert [position[i] for i in part] == sorted(position[i] for i in part)
    # Every annotation and relationship goes with its image, once.
    for name in ("annotations", "relationships"):
        got = sorted(x["id"] for p in (train, val, test) for x in p[name])
        assert got == sorted(x["id"] for x in data[name])
        for part, part_ids in zip((train, val, test), ids, strict=True):
            assert {x["image_id"] for x in part[name]} <= set(part_ids)
    assert [p["info"]["split"] for p in (train, val, test)] == ["train", "val", "test"]
    assert train["categories"] == data["categories"]
    assert test["predicate_categories"] == data["predicate_categories"]


def test_deterministic_by_seed(data):
    a = split_train_val_test(data, num_val=10, seed=0)
    b = split_train_val_test(data, num_val=10, seed=0)
    c = split_train_val_test(data, num_val=10, seed=1)
    assert a == b
    assert _ids(a[1]) != _ids(c[1]) and _ids(a[2]) == _ids(c[2])
    # A hash draw: membership does not depend on the order of the input images.
    shuffled = {**data, "images": data["images"][:70][::-1] + data["images"][70:]}
    assert set(_ids(split_train_val_test(shuffled, num_val=10, seed=0)[1])) == set(_ids(a[1]))
    # A larger draw of the same seed extends the smaller one.
    assert set(_ids(a[1])) <= set(_ids(split_train_val_test(data, num_val=20, seed=0)[1]))


def test_zero_validation_images(data):
    train, val, test = split_train_val_test(data, num_val=0)
    assert len(train["images"]) == 70 and val["images"] == [] and val["annotations"] == []


def test_too_many_validation_images_name_the_option(data):
    msg = (r"num_val: expected fewer validation images than the 70 training images \(100 "
           r"images minus the test split of 30\), got 5000; lower num_val")
    with pytest.raises(ValueError, match=msg):
        split_train_val_test(data)                                   # the default 5,000
    with pytest.raises(ValueError, match=r"^num_val: .* got 70;"):
        split_train_val_test(data, num_val=70)
    with pytest.raises(ValueError, match=r"^num_val: expected a non-negative number"):
        split_train_val_test(data, num_val=-1)
    with pytest.raises(ValueError, match=r"^test_fraction: expected a value in \[0, 1\)"):
        split_train_val_test(data, test_fraction=1.0, num_val=1)


def test_tool_writes_three_files_and_names_its_option(tmp_path, capsys):
    tool = runpy.run_path(str(ROOT / "tools" / "convert_vg.py"))
    out = tmp_path / "vg"
    report = tool["main"]([*TOOL_ARGS, "--out", str(out), "--num-val", "15", "--seed", "2"])
    assert (report["train_images"], report["val_images"], report["test_images"]) == (55, 15, 30)
    written = {n: json.loads((out / f"vg150_{n}.json").read_text())
               for n in ("train", "val", "test")}
    expected = split_train_val_test(convert_visual_genome(*ARGS)[0], num_val=15, seed=2)
    for part, want in zip(written.values(), expected, strict=True):
        assert part == json.loads(json.dumps(want))
    with pytest.raises(SystemExit) as info:
        tool["main"]([*TOOL_ARGS, "--out", str(tmp_path / "big")])   # default --num-val 5000
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--num-val: expected fewer validation images than the 70 training images" in err
    assert not (tmp_path / "big").exists()                          # nothing written


def test_vg_config_selects_best_on_val_only():
    cfg = load_config(ROOT / "configs" / "vg_graph.yaml")
    assert cfg.data.train_json == "vg150_train.json"
    assert cfg.data.val_json == "vg150_val.json"                     # never the test split
    text = (ROOT / "configs" / "vg_graph.yaml").read_text()
    assert "VG_100K and VG_100K_2 merged" not in text
    assert "VG_100K_2" in text and "vg150_test.json" in text
