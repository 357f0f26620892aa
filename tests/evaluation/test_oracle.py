"""The ceiling of the map layout (docs/design.md "Slots"): the VG sample's ground truth
rendered as perfect maps, decoded and scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aehg.data.visual_genome import convert_visual_genome
from aehg.evaluation import oracle_maps, oracle_scores
from aehg.evaluation.oracle import relation_ground_truth

SAMPLE = Path(__file__).parents[1] / "data" / "visual_genome_sample"


@pytest.fixture(scope="module")
def vg():
    data, _ = convert_visual_genome(
        SAMPLE / "scene_graphs_first100.json", SAMPLE / "image_data_first100.json",
        SAMPLE / "VG-SGG-dicts-with-attri.json", SAMPLE / "xu_object_alias.txt",
        SAMPLE / "xu_predicate_alias.txt")
    return data


def _first(data, n):
    ids = {img["id"] for img in sorted(data["images"], key=lambda i: i["id"])[:n]}
    return {**data, "images": [i for i in data["images"] if i["id"] in ids],
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
            "relationships": [r for r in data["relationships"] if r["image_id"] in ids]}


def test_slots_lift_the_ceiling_on_part_of_the_sample(vg):
    part = _first(vg, 30)
    one = oracle_scores(part, output_size=128)
    slots = oracle_scores(part, output_size=128, object_slots=3, relation_slots=6)
    assert slots["ngR@100"] >= 0.99 > one["ngR@100"]
    assert slots["R@100"] > one["R@100"]
    assert slots["object_recall"] >= one["object_recall"] >= 0.99
    assert slots["relations"] == one["relations"] == sum(
        len(g["relations"]) for g in relation_ground_truth(part))


@pytest.mark.slow
def test_ceiling_on_the_whole_sample(vg):
    """The figures of docs/design.md "Slots" (VG150, 512 input)."""
    one = oracle_scores(vg, output_size=128)
    slots = oracle_scores(vg, output_size=128, object_slots=3, relation_slots=6)
    assert (one["objects"], one["relations"]) == (1780, 704)
    assert one["ngR@100"] == pytest.approx(0.92, abs=0.01)
    assert slots["ngR@100"] >= 0.99
    small = oracle_scores(vg, output_size=64)
    assert small["ngR@100"] == pytest.approx(0.85, abs=0.01)


def test_oracle_maps_hold_colliding_objects_and_reverse_links():
    # Two objects with one centre (a box inside another) and A→B, B→A: same midpoint.
    boxes = np.array([[0, 0, 40, 40], [10, 10, 30, 30], [100, 100, 120, 140]], float)
    labels = np.array([1, 2, 0])
    rels = np.array([[0, 2, 1], [2, 0, 3]])
    one, _ = oracle_maps(boxes, labels, rels, (200, 200), num_classes=3, num_predicates=4,
                         input_size=256, output_size=64)
    two, m = oracle_maps(boxes, labels, rels, (200, 200), num_classes=3, num_predicates=4,
                         input_size=256, output_size=64, object_slots=2, relation_slots=2)
    assert one.objects.heatmaps.shape == (1, 3, 64, 64)
    assert two.objects.heatmaps.shape == (1, 6, 64, 64)
    assert two.interactions.src.shape == (1, 2, 64, 64)
    # Both objects at the shared centre have a distinct tag in their own slot.
    peaks = (two.objects.heatmaps[0] == 1).nonzero().tolist()
    slot_of = {c % 3: c // 3 for c, _, _ in peaks}
    assert slot_of[1] != slot_of[2]
    # One slot: the second object shares the first one's tag; the reverse links average.
    y, x = next((py, px) for c, py, px in peaks if c % 3 == 1)
    assert one.objects.tags[0, 0, 0, y, x] == 4.0
    src = two.interactions.src[0].flatten(1)
    nz = src.nonzero()
    assert len(nz) == 2 and set(src[nz[:, 0], nz[:, 1]].tolist()) == {4.0, 12.0}
    assert one.interactions.src[0].flatten().max() == 8.0           # (4 + 12) / 2
    with pytest.raises(ValueError, match="labels: expected classes in"):
        oracle_maps(boxes, labels + 1, rels, (200, 200), num_classes=3, num_predicates=4)
