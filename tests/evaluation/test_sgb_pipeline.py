"""The evaluation pipeline passes Scene-Graph-Benchmark's settings through: the vocabulary size
(mR@K over all predicates), the training triplets (zR@K, from the three places they can come
from) and ``eval.triplet_score``."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from aehg.config import Config, ConfigError, EvalConfig, config_from_dict
from aehg.data import RelationDataset
from aehg.decoding import Instances
from aehg.evaluation.model import predicate_recall, score_predictions, train_triplets
from aehg.inference import Prediction

# Three classes (category ids 5, 6, 7 → indices 0, 1, 2) and three predicates (ids 10, 11, 12
# → 0, 1, 2). Image 1: A(0) -p0-> B(1), B(1) -p1-> C(2). Image 2: D(0) -p0-> E(1).
CATS = [{"id": 5, "name": "man"}, {"id": 6, "name": "horse"}, {"id": 7, "name": "hat"}]
PREDS = [{"id": 10, "name": "on"}, {"id": 11, "name": "has"}, {"id": 12, "name": "near"}]
BOXES = {1: [[0, 0, 10, 10], [20, 20, 10, 10], [40, 40, 10, 10]],  # COCO x, y, w, h
         2: [[0, 0, 10, 10], [20, 20, 10, 10]]}
LABELS = {1: [5, 6, 7], 2: [5, 6]}
RELS = {1: [(0, 1, 10), (1, 2, 11)], 2: [(0, 1, 10)]}


def _relation_json(rels_by_image, cats=CATS):
    images, anns, rels = [], [], []
    for img_id in (1, 2):
        images.append({"id": img_id, "file_name": f"{img_id}.jpg", "width": 64, "height": 64})
        first = len(anns) + 1
        for box, cat in zip(BOXES[img_id], LABELS[img_id], strict=True):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat,
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for s, o, p in rels_by_image.get(img_id, []):
            rels.append({"id": len(rels) + 1, "image_id": img_id, "subject_id": first + s,
                         "object_id": first + o, "predicate_id": p})
    return {"images": images, "annotations": anns, "categories": cats,
            "predicate_categories": PREDS, "relationships": rels}


def _triplet_file(path, triplets):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"triplets": [list(t) for t in triplets]}))


@pytest.fixture()
def data(tmp_path):
    """val.json (the ground truth above); train.json holds only man -has-> horse."""
    root = tmp_path / "vg"
    root.mkdir()
    (root / "val.json").write_text(json.dumps(_relation_json(RELS)))
    (root / "train.json").write_text(json.dumps(_relation_json({1: [(0, 1, 11)]})))
    cfg = config_from_dict({"model": {"num_classes": 3, "num_link_classes": 3},
                            "data": {"kind": "relations", "root": str(root),
                                     "train_json": "train.json", "val_json": "val.json"}})
    return root, cfg, RelationDataset(root / "val.json", root / "images")


def _predictions(dataset):
    """Image 1 predicts exactly A -p0-> B (its ground-truth boxes); image 2 predicts nothing."""
    out = []
    for img_id, edges in ((1, [(0, 1, 0)]), (2, [])):
        boxes, labels = dataset.boxes(img_id), dataset.labels(img_id)
        n = len(labels)
        kp = np.zeros((n, 3, 3))
        kp[np.arange(n), labels, :2] = (boxes[:, :2] + boxes[:, 2:]) / 2
        kp[np.arange(n), labels, 2] = 1.0
        g = nx.MultiDiGraph()
        for i in range(n):
            g.add_node(i, label=int(labels[i]), score=0.9)
        for s, o, p in edges:
            g.add_edge(s, o, key=p, label=p, score=0.54, heat=0.6)  # 0.6·sqrt(0.9·0.9)
        out.append(Prediction(Instances(kp, np.full(n, 0.9), np.zeros((n, 1)), labels, boxes),
                              g, (64, 64), img_id))
    return out


def test_mean_recall_averages_over_the_whole_vocabulary(data):
    """R@K = (1/2 + 0) / 2; per predicate p0 = (1 + 0) / 2, p1 = 0, p2 absent: mR@K over the 3
    predicates = 0.5 / 3 (0.25 if only the 2 present predicates counted)."""
    _, cfg, ds = data
    out = score_predictions(_predictions(ds), ds, cfg)
    for k in (20, 50, 100):
        assert out[f"R@{k}"] == 0.25
        assert out[f"mR@{k}"] == pytest.approx(1 / 6)
        assert out[f"ng-mR@{k}"] == pytest.approx(1 / 6)
    rows = predicate_recall(_predictions(ds), ds, cfg)
    assert [(r["name"], r["relations"], r["images"], r["R@20"]) for r in rows] == \
        [("on", 2, 2, 0.5), ("has", 1, 1, 0.0), ("near", 0, 0, None)]


def test_zero_shot_triplets_from_the_training_json(data):
    """No triplet file: train.json's only triplet is (man, has, horse), so all three
    ground-truth triplets are zero-shot: image 1 finds 1 of 2, image 2 none → zR = 0.25."""
    root, cfg, ds = data
    triplets, source = train_triplets(cfg, ds)
    assert triplets.tolist() == [[0, 1, 1]] and source == str(root / "train.json")
    out = score_predictions(_predictions(ds), ds, cfg)
    assert out["zR@20"] == 0.25 and out["ng-zR@100"] == 0.25
    assert not (root / "train_triplets.json").exists()  # nothing written into the data


def test_zero_shot_triplets_file_beside_the_validation_json_wins(data):
    """train_triplets.json (ids) holds (horse, has, hat): zero-shot are A-on->B (hit) and
    D-on->E (missed) → zR = (1 + 0) / 2."""
    root, cfg, ds = data
    _triplet_file(root / "train_triplets.json", [(6, 11, 7)])
    triplets, source = train_triplets(cfg, ds)
    assert triplets.tolist() == [[1, 1, 2]] and source == str(root / "train_triplets.json")
    out = score_predictions(_predictions(ds), ds, cfg)
    assert out["zR@50"] == 0.5 and out["ng-zR@50"] == 0.5


def test_data_train_triplets_key_wins_and_is_relative_to_the_root(data):
    """data.train_triplets names (man, on, horse): the only zero-shot triplet is B-has->C,
    missed → zR = 0 (only image 1 has a zero-shot triplet)."""
    root, cfg, ds = data
    _triplet_file(root / "train_triplets.json", [(6, 11, 7)])
    _triplet_file(root / "other" / "seen.json", [(5, 10, 6)])
    cfg.data.train_triplets = "other/seen.json"
    assert train_triplets(cfg, ds)[1] == str(root / "other" / "seen.json")
    out = score_predictions(_predictions(ds), ds, cfg)
    assert out["zR@20"] == 0.0 and out["R@20"] == 0.25
    cfg.data.train_triplets = "missing.json"
    with pytest.raises(FileNotFoundError, match=r"^data\.train_triplets: training triplet "
                       r"file not found: .*missing\.json$"):
        score_predictions(_predictions(ds), ds, cfg)


def test_no_training_triplets_means_no_zero_shot_keys(data, capsys):
    root, cfg, ds = data
    (root / "train.json").unlink()
    assert train_triplets(cfg, ds) is None
    out = score_predictions(_predictions(ds), ds, cfg, verbose=True)
    assert not any(k.startswith(("zR", "ng-zR")) for k in out)
    assert set(out) >= {"R@20", "ngR@20", "mR@20", "ng-mR@20"}
    assert "zR@K, ng-zR@K: not computed (no training triplets: set data.train_triplets or " \
        "give the training JSON)" in capsys.readouterr().out


def test_training_json_with_an_unknown_category_is_named(data):
    root, cfg, ds = data
    cats = CATS[:2] + [{"id": 99, "name": "kite"}]
    train = _relation_json({1: [(1, 2, 11)]}, cats=cats)
    train["annotations"][2]["category_id"] = 99
    (root / "train.json").write_text(json.dumps(train))
    with pytest.raises(ValueError, match=r"train\.json: training triplet \(6, 11, 99\): "
                       r"category id 99 is not a category of .*val\.json$"):
        train_triplets(cfg, ds)


def test_triplet_score_config_key_reaches_the_ranking(data):
    """Image 1 also predicts a wrong man -near-> hat (hat score 0.1). aehg ranks it first
    (1.0·sqrt(0.9·0.1) = 0.3 > 0.3·0.9 = 0.27), sgb last (1.0·0.9·0.1 = 0.09 < 0.3·0.81 =
    0.243): ngR@1 = 0 with aehg, (1/2 + 0) / 2 with sgb."""
    _, cfg, ds = data
    preds = _predictions(ds)
    g = preds[0].graph
    g.nodes[2]["score"] = 0.1
    g.edges[0, 1, 0].update(score=0.27, heat=0.3)
    g.add_edge(0, 2, key=2, label=2, score=0.3, heat=1.0)
    cfg.eval.recall_ks = [1]
    assert score_predictions(preds, ds, cfg)["ngR@1"] == 0.0
    cfg.eval.triplet_score = "sgb"
    out = score_predictions(preds, ds, cfg)
    assert out["ngR@1"] == 0.25 and out["R@1"] == 0.25 and out["zR@1"] == 0.25


def test_triplet_score_and_train_triplets_config_errors():
    with pytest.raises(ConfigError, match=r"^eval\.triplet_score: expected one of 'aehg', "
                       r"'sgb', got 'product'$"):
        config_from_dict({"eval": {"triplet_score": "product"}})
    with pytest.raises(ConfigError, match=r"^eval\.triplet_score: expected 'aehg' or 'sgb', "
                       r"got 'x'$"):
        EvalConfig(triplet_score="x").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^data\.train_triplets: expected null or a path "
                       r"\(relative to data\.root\), got an empty string$"):
        config_from_dict({"data": {"train_triplets": " "}})
    assert Config().eval.triplet_score == "aehg" and Config().data.train_triplets is None
    assert config_from_dict({"eval": {"triplet_score": "sgb"}}).eval.triplet_score == "sgb"
