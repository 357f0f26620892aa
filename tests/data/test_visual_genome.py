"""Visual Genome converter on the real 100-image sample (tests/data/visual_genome_sample)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from aehg.data.relations import RelationDataset
from aehg.data.visual_genome import (
    clean_phrase,
    convert_visual_genome,
    load_alias_dict,
    split_relation_data,
)

SAMPLE = Path(__file__).parent / "visual_genome_sample"
ARGS = (SAMPLE / "scene_graphs_first100.json", SAMPLE / "image_data_first100.json",
        SAMPLE / "VG-SGG-dicts-with-attri.json", SAMPLE / "xu_object_alias.txt",
        SAMPLE / "xu_predicate_alias.txt")

# Pinned counts (regression): what the VG150 rules keep and drop on images 1-100.
EXPECTED = {
    "images": 100, "objects_total": 3671, "objects_kept": 1780,
    "objects_dropped_vocabulary": 1891, "objects_dropped_box": 0,
    "relations_total": 2615, "relations_kept": 704, "relations_dropped_missing_object": 0,
    "relations_dropped_object": 1688, "relations_dropped_predicate": 61,
    "relations_dropped_self": 1, "relations_dropped_duplicate": 161,
}


@pytest.fixture(scope="module")
def converted():
    return convert_visual_genome(*ARGS)


def test_phrase_cleaning_and_aliases():
    assert clean_phrase("  Next To. ") == "next to"
    assert clean_phrase("Café's") == "cafes"
    objects = load_alias_dict(SAMPLE / "xu_object_alias.txt")
    preds = load_alias_dict(SAMPLE / "xu_predicate_alias.txt")
    assert objects["pants"] == "pant" and objects["pant"] == "pant"
    assert preds["next to"] == "near" and preds["inside"] == "in"


def test_counts_are_stable(converted):
    data, report = converted
    assert report == EXPECTED
    assert data["info"]["counts"] == EXPECTED
    assert len(data["annotations"]) == EXPECTED["objects_kept"]
    assert len(data["relationships"]) == EXPECTED["relations_kept"]
    assert convert_visual_genome(*ARGS)[1] == report


def test_counts_match_a_naive_recount(converted):
    """Recount the kept objects and relationships straight from the raw files."""
    data, _ = converted
    graphs = json.loads(ARGS[0].read_text())
    vocab = json.loads(ARGS[2].read_text())
    kept_vg = {a["vg_object_id"] for a in data["annotations"]}
    total = sum(len(g["objects"]) for g in graphs)
    assert len(kept_vg) == len(data["annotations"]) <= total
    objects = load_alias_dict(ARGS[3])
    for g in graphs:
        for o in g["objects"]:
            if o["object_id"] in kept_vg:
                continue
            # A dropped object has no name that cleans/aliases into the vocabulary.
            for n in o["names"]:
                c = clean_phrase(n)
                assert objects.get(c, c) not in vocab["label_to_idx"]
    assert {c["name"] for c in data["categories"]} == set(vocab["label_to_idx"])
    assert len(data["categories"]) == 150 and len(data["predicate_categories"]) == 50


def test_invariants(converted):
    data, _ = converted
    anns = {a["id"]: a for a in data["annotations"]}
    triplets = set()
    for r in data["relationships"]:
        s, o = anns[r["subject_id"]], anns[r["object_id"]]
        assert s["image_id"] == o["image_id"] == r["image_id"]
        assert r["subject_id"] != r["object_id"]
        key = (r["subject_id"], r["object_id"], r["predicate_id"])
        assert key not in triplets
        triplets.add(key)
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= W and y + h <= H
    assert data["images"][0]["file_name"] == "VG_100K_2/1.jpg"


def test_output_loads_with_pycocotools_and_the_dataset(converted, tmp_path):
    data, _ = converted
    path = tmp_path / "vg.json"
    path.write_text(json.dumps(data))
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 100 and len(coco.getAnnIds()) == EXPECTED["objects_kept"]
    assert len(coco.getCatIds()) == 150
    ds = RelationDataset(path, tmp_path / "no_images", input_size=256, output_size=64,
                         max_instances=100, max_links=200)
    assert ds.num_classes == 150 and ds.num_predicates == 50
    assert sum(len(ds.links(i)) for i in ds.ids) == EXPECTED["relations_kept"]
    stats = ds.stats                                   # from annotations only, no pixels
    assert stats["images"] == 100 and stats["links_dropped"] >= 0
    assert stats["object_collisions"] >= 0 and stats["link_collisions"] > 0


def test_split_and_tool(tmp_path, converted):
    train, val = split_relation_data(converted[0], 0.3)
    assert len(train["images"]) == 70 and len(val["images"]) == 30
    assert len(train["relationships"]) + len(val["relationships"]) == EXPECTED["relations_kept"]
    tool = runpy.run_path(str(Path(__file__).parents[2] / "tools" / "convert_vg.py"))
    report = tool["main"](["--scene-graphs", str(ARGS[0]), "--image-data", str(ARGS[1]),
                           "--vocab", str(ARGS[2]), "--object-alias", str(ARGS[3]),
                           "--predicate-alias", str(ARGS[4]), "--out", str(tmp_path / "vg"),
                           "--num-val", "10"])
    assert (report["train_images"], report["val_images"], report["test_images"]) == (60, 10, 30)
    # The order-based 30 % stays the test split; validation comes out of the first 70 %.
    written = json.loads((tmp_path / "vg" / "vg150_test.json").read_text())
    assert written["images"] == val["images"]


def test_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        convert_visual_genome(tmp_path / "nothere.json", *ARGS[1:])
    with pytest.raises(ValueError, match=r"image id 1: not in the image data"):
        convert_visual_genome(ARGS[0], [], ARGS[2])
