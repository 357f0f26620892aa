"""Inference: test-time maps (flip, multi-scale, early exit), Predictor, model evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aehg.data.transforms import apply_affine
from aehg.inference import (
    ImageReadError,
    infer_maps,
    preprocess,
    read_image,
    resolve_flip_map,
)
from aehg.models import ObjectMaps, StackedHourglass, StackOutput

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


def _tiny(num_stacks=2, **kw):
    torch.manual_seed(0)
    kw.setdefault("num_classes", 5)
    model = StackedHourglass(num_stacks=num_stacks, channels=16, depth=2, **kw)
    # Larger head weights than the near-zero init so that the maps carry visible structure.
    for head in model.heads:
        nn.init.normal_(head.weight, std=0.3)
    return model.eval()


def _picture(h=90, w=120, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_flip_test_matches_explicit_reference():
    model = _tiny(num_link_classes=2, embedding_dim=2)
    img = _picture()
    fm = np.array([0, 2, 1, 4, 3])
    merged, metas = infer_maps(model, [img], 64, 16, flip=True, flip_map=fm)
    x, _ = preprocess(img, 64, 16)
    with torch.no_grad():
        plain = model(x[None])[-1]
        mirrored = model(x[None].flip(-1))[-1]
    h, hf = plain.objects.heatmaps[0].numpy(), mirrored.objects.heatmaps[0].numpy()
    t, tf = plain.objects.tags[0].numpy(), mirrored.objects.tags[0].numpy()
    c, e, hh, ww = t.shape
    ref_heat = np.zeros_like(h)
    ref_tags = np.zeros((c, 2 * e, hh, ww), np.float32)
    for ch in range(c):  # naive: part ch of the picture is part fm[ch] of the mirror
        for xx in range(ww):
            ref_heat[ch, :, xx] = (h[ch, :, xx] + hf[fm[ch], :, ww - 1 - xx]) / 2
            ref_tags[ch, :e, :, xx] = t[ch, :, :, xx]
            ref_tags[ch, e:, :, xx] = tf[fm[ch], :, :, ww - 1 - xx]
    # float32: the picture and its mirror run as one batch of 2 here and as batches of 1 in
    # the reference, which may round differently (seen: 1.4e-6 on values near 2).
    np.testing.assert_allclose(merged.objects.heatmaps[0].numpy(), ref_heat, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(merged.objects.tags[0].numpy(), ref_tags, rtol=1e-5, atol=1e-6)
    assert merged.objects.tags.shape[2] == 4  # E doubled
    links = merged.interactions
    ref_src = np.concatenate([plain.interactions.src[0].numpy(),
                              mirrored.interactions.src[0].numpy()[..., ::-1]])
    np.testing.assert_allclose(links.src[0].numpy(), ref_src, rtol=1e-5, atol=1e-6)
    ref_lh = (plain.interactions.heatmaps[0].numpy()
              + mirrored.interactions.heatmaps[0].numpy()[..., ::-1]) / 2
    np.testing.assert_allclose(links.heatmaps[0].numpy(), ref_lh, rtol=1e-5, atol=1e-6)
    assert metas[0]["orig_size"] == (90, 120)


def test_shared_tags_are_not_permuted():
    model = _tiny(tag_per_class=False)
    merged, _ = infer_maps(model, [_picture()], 64, 16, flip=True,
                               flip_map=[0, 2, 1, 4, 3])
    x, _ = preprocess(_picture(), 64, 16)
    with torch.no_grad():
        tf = model(x[None].flip(-1))[-1].objects.tags[0, 0].numpy()
    np.testing.assert_allclose(merged.objects.tags[0, 0, 1].numpy(), tf[0, :, ::-1], atol=1e-6)


def test_early_exit_returns_first_stack():
    model = _tiny(num_stacks=2)
    img = _picture()
    x, _ = preprocess(img, 64, 16)
    with torch.no_grad():
        outs = model(x[None])
    first, _ = infer_maps(model, [img], 64, 16, stacks=1)
    last, _ = infer_maps(model, [img], 64, 16)
    np.testing.assert_allclose(first.objects.heatmaps.numpy(), outs[0].objects.heatmaps.numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(last.objects.heatmaps.numpy(), outs[1].objects.heatmaps.numpy(),
                               atol=1e-6)
    assert not np.allclose(first.objects.heatmaps.numpy(), last.objects.heatmaps.numpy())


class _PoolModel(nn.Module):
    """Heatmap = the input's first channel average-pooled by the stride (a 'detector' of
    bright spots), so multi-scale alignment can be checked against the picture."""

    size_divisor = 16
    num_classes = 1

    def forward(self, x, stacks=None):
        heat = F.avg_pool2d(x[:, :1], 4)
        b, _, h, w = heat.shape
        return [StackOutput(ObjectMaps(heat, torch.zeros(b, 1, 1, h, w)), None)]


def _blob_picture(cx, cy, h=150, w=200):
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 12.0 ** 2))
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = (blob * 255).round().astype(np.uint8)  # red = first RGB channel
    return img


def _centroid(heat):
    heat = np.clip(heat - heat.min(), 0, None)
    yy, xx = np.mgrid[0:heat.shape[0], 0:heat.shape[1]]
    return np.array([(heat * xx).sum(), (heat * yy).sum()]) / heat.sum()


def test_multi_scale_maps_are_aligned_on_the_base_grid():
    img = _blob_picture(70.0, 90.0)
    model = _PoolModel()
    base, metas = infer_maps(model, [img], 128, 32)
    expected = apply_affine(np.array([70.0, 90.0]), metas[0]["transform"])
    np.testing.assert_allclose(_centroid(base.objects.heatmaps[0, 0].numpy()), expected,
                               atol=0.25)
    multi, metas2 = infer_maps(model, [img], 128, 32, scales=[2.0, 1.0, 0.5])
    np.testing.assert_allclose(metas2[0]["transform"], metas[0]["transform"])  # base = 1.0
    assert multi.objects.heatmaps.shape == base.objects.heatmaps.shape
    np.testing.assert_allclose(_centroid(multi.objects.heatmaps[0, 0].numpy()), expected,
                               atol=0.25)
    # Averaged, not summed: a constant-brightness check on the peak height.
    ratio = multi.objects.heatmaps.max() / base.objects.heatmaps.max()
    assert 0.7 < float(ratio) < 1.3


def test_resolve_flip_map():
    # A keypoint set's swap is never guessed from its part count (issue: silent identity /
    # COCO fallbacks mixed left and right); object classes do not swap.
    assert resolve_flip_map(None, 17) is None and resolve_flip_map(None, 5) is None
    np.testing.assert_array_equal(resolve_flip_map(COCO_FLIP, 17), COCO_FLIP)
    np.testing.assert_array_equal(resolve_flip_map(None, 17, kind="relations"), np.arange(17))
    with pytest.raises(ValueError, match="flip_map: expected a permutation of 0..2"):
        resolve_flip_map([0, 0, 1], 3)


def test_read_image_errors(tmp_path):
    with pytest.raises(ImageReadError, match="image file not found"):
        read_image(tmp_path / "none.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="cannot decode image file"):
        read_image(bad)


# --------------------------------------------------------------------------- decoding


from pathlib import Path  # noqa: E402

import networkx as nx  # noqa: E402

from aehg.checkpoint import save_checkpoint  # noqa: E402
from aehg.config import EvalConfig, config_from_dict, config_to_dict  # noqa: E402
from aehg.data import CocoKeypointDataset, build_dataloader, build_dataset  # noqa: E402
from aehg.data.transforms import invert_affine  # noqa: E402
from aehg.decoding import Instances  # noqa: E402
from aehg.evaluation import evaluate_model, score_predictions  # noqa: E402
from aehg.inference import (  # noqa: E402
    Prediction,
    Predictor,
    decode_predictions,
    predict_dataset,
)

DATA = Path(__file__).resolve().parents[1] / "data"
COCO_ANN = DATA / "coco_kp_ccby" / "person_keypoints_ccby.json"
PHOTO = DATA / "images" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def coco_val():
    return CocoKeypointDataset(COCO_ANN, COCO_ANN.parent / "images", train=False,
                               input_size=512, output_size=128)


def test_decode_predictions_maps_ideal_peaks_back_to_image_pixels(coco_val):
    """Unit peaks at the rounded target locations, tags = person index: decoding gives exactly
    those locations mapped back through the inverse transform, grouped per person."""
    sample = coco_val[list(coco_val.ids).index(129648)]  # 9 people
    meta = sample["meta"]
    parts = sample["parts"].numpy()  # (max_instances, C, 2) flat index, visible
    c, h, w = sample["heatmaps"].shape
    heat = np.zeros(c * h * w, np.float32)
    tags = np.zeros(c * h * w, np.float32)
    vis = parts[..., 1] > 0
    person = np.broadcast_to(np.arange(parts.shape[0])[:, None], vis.shape)
    heat[parts[..., 0][vis]] = 1.0
    tags[parts[..., 0][vis]] = 3.0 * person[vis]
    maps = StackOutput(ObjectMaps(torch.from_numpy(heat.reshape(1, c, h, w)),
                                  torch.from_numpy(tags.reshape(1, c, 1, h, w))), None)
    ecfg = EvalConfig(nms_kernel=1, adjust=False, refine=False)
    (pred,) = decode_predictions(maps, [meta], ecfg)
    flat = parts[..., 0][vis]
    ch, y, x = flat // (h * w), (flat % (h * w)) // w, flat % w
    expected = apply_affine(np.stack([x, y], 1).astype(float), invert_affine(meta["transform"]))
    got_vis = pred.keypoints[..., 2] > 0
    got_ch = np.broadcast_to(np.arange(c), got_vis.shape)[got_vis]
    got = pred.keypoints[got_vis][:, :2]
    as_set = {(int(k), round(float(a), 3), round(float(b), 3))
              for k, (a, b) in zip(got_ch, got, strict=True)}
    assert as_set == {(int(k), round(float(a), 3), round(float(b), 3))
                      for k, (a, b) in zip(ch, expected, strict=True)}
    assert len(pred.scores) == 9
    assert pred.graph.number_of_nodes() == 9 and pred.graph.number_of_edges() == 0
    assert pred.graph.graph["image_id"] == 129648
    assert (pred.graph.graph["height"], pred.graph.graph["width"]) == meta["orig_size"]


def test_ground_truth_predictions_score_one_through_score_predictions(coco_val):
    cfg = config_from_dict({"data": {"input_size": 512, "output_size": 128}})
    preds = []
    for img_id in coco_val.ids:
        kp = coco_val.keypoints(img_id)
        scored = np.concatenate([kp[..., :2], (kp[..., 2:] > 0).astype(float)], -1)
        inst = Instances(scored, np.ones(len(kp)), np.zeros((len(kp), 1)))
        info = coco_val.coco.imgs[img_id]
        preds.append(Prediction(inst, nx.MultiDiGraph(), (info["height"], info["width"]),
                                img_id))
    stats = score_predictions(preds, coco_val, cfg)
    assert stats["AP"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- predictor


def _pose_cfg(**model):
    # The flip map a training run stores in its config (the run that made the checkpoint).
    m = {"num_stacks": 2, "channels": 16, "depth": 2, "num_classes": 17}
    m.update(model)
    return config_from_dict({"model": m, "data": {"input_size": 128, "output_size": 32,
                                                  "flip_map": list(COCO_FLIP)},
                             "eval": {"detection_threshold": 0.2}})


@pytest.fixture(scope="module")
def pose_checkpoint(tmp_path_factory):
    cfg = _pose_cfg()
    model = _tiny_from(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return path, cfg


def _tiny_from(cfg):
    from aehg.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    for head in model.heads:
        nn.init.normal_(head.weight, std=0.3)
    return model.eval()


def test_predictor_on_a_real_photo(pose_checkpoint):
    path, cfg = pose_checkpoint
    predictor = Predictor(None, path)  # config read from the checkpoint
    photo = read_image(PHOTO)
    pred = predictor.predict(PHOTO)
    n = len(pred.scores)
    assert n >= 1  # the scaled-up random heads fire somewhere
    assert pred.keypoints.shape == (n, 17, 3)
    assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.scores).all()
    assert (np.diff(pred.scores) <= 0).all()
    assert pred.orig_size == photo.shape[:2] and pred.file_name == "grace_hopper.jpg"
    # Present parts lie inside the square the network saw, mapped back to the photo.
    h, w = photo.shape[:2]
    side = max(h, w)
    present = pred.keypoints[..., 2] > 0
    xy = pred.keypoints[present][:, :2]
    assert (xy[:, 0] > (w - side) / 2 - 8).all() and (xy[:, 0] < (w + side) / 2 + 8).all()
    assert (xy[:, 1] > (h - side) / 2 - 8).all() and (xy[:, 1] < (h + side) / 2 + 8).all()
    g = pred.graph
    assert g.number_of_nodes() == n and (g.graph["height"], g.graph["width"]) == (h, w)
    np.testing.assert_allclose(np.asarray(g.nodes[0]["keypoints"]), pred.keypoints[0],
                               rtol=1e-6)
    # An array input gives the same answer; batches give the same answers as single calls.
    same = predictor.predict(photo)
    np.testing.assert_allclose(same.keypoints, pred.keypoints)
    flipped = np.ascontiguousarray(photo[:, ::-1])
    batch = Predictor(cfg, path, batch_size=1).predict_batch([photo, flipped], [1, 2])
    assert [p.image_id for p in batch] == [1, 2]
    np.testing.assert_allclose(batch[0].keypoints, pred.keypoints)
    np.testing.assert_allclose(batch[1].keypoints, predictor.predict(flipped).keypoints)


def test_predictor_with_untouched_random_init(tmp_path):
    """A freshly built model (near-zero heads) gives well-formed, possibly empty, output."""
    from aehg.models import build_model

    cfg = _pose_cfg()
    torch.manual_seed(1)
    path = tmp_path / "init.pt"
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(),
                           "config": config_to_dict(cfg)})
    pred = Predictor(None, path, flip=True).predict(PHOTO)
    n = len(pred.scores)
    assert pred.keypoints.shape == (n, 17, 3) and pred.instances.tags.shape == (n, 2)
    assert pred.graph.number_of_nodes() == n and pred.graph.number_of_edges() == 0
    assert pred.orig_size == read_image(PHOTO).shape[:2]


def test_predictor_flip_test_without_a_flip_map_is_an_error(tmp_path):
    cfg = _pose_cfg()
    cfg.data.flip_map = None  # 17 parts, no names, no stored swap: nothing to flip with
    path = tmp_path / "noflip.pt"
    save_checkpoint(path, {"model": _tiny_from(cfg).state_dict(),
                           "config": config_to_dict(cfg)})
    with pytest.raises(ValueError, match=r"^flip test \(Predictor flip=True / eval.flip_test\): "
                       r"horizontal flips need the left/right swap of the parts.*set "
                       r"data.flip_map"):
        Predictor(None, path, flip=True)
    assert Predictor(None, path, flip=False).predict(PHOTO).keypoints.shape[1] == 17


def test_predictor_flip_and_multi_scale_options(pose_checkpoint):
    path, cfg = pose_checkpoint
    pred = Predictor(cfg, path, flip=True, scales=[1.0, 1.5]).predict(PHOTO)
    assert pred.instances.tags.shape[1] == 2  # flip test concatenates the 1-D tags
    assert np.isfinite(pred.keypoints).all()


def test_predictor_early_exit_uses_the_first_stack(pose_checkpoint):
    path, cfg = pose_checkpoint
    photo = read_image(PHOTO)
    early = Predictor(cfg, path, stacks=1).predict(photo)
    full = Predictor(cfg, path).predict(photo)
    # The reference runs like the Predictor (channels_last): a random network's maps have
    # near-ties that a 1e-7 layout difference can reorder.
    model = _tiny_from(cfg).to(memory_format=torch.channels_last)
    x, meta = preprocess(photo, 128, 32)
    with torch.no_grad():
        first = model(x[None].contiguous(memory_format=torch.channels_last))[0]
    meta.update(image_id=None, file_name=None)
    (ref,) = decode_predictions(first, [meta], cfg.eval)
    np.testing.assert_allclose(early.keypoints, ref.keypoints, atol=1e-5)
    np.testing.assert_allclose(early.scores, ref.scores, atol=1e-6)
    assert early.keypoints.shape != full.keypoints.shape or \
        not np.allclose(early.keypoints, full.keypoints)


def test_predictor_errors(pose_checkpoint, tmp_path):
    path, cfg = pose_checkpoint
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Predictor(cfg, tmp_path / "missing.pt")
    other = _pose_cfg(channels=32)
    with pytest.raises(ValueError, match=r"does not fit this model.*shape mismatch"):
        Predictor(other, path)
    with pytest.raises(ValueError, match=r"stacks: expected 1..2"):
        Predictor(cfg, path, stacks=3)
    with pytest.raises(ImageReadError, match="cannot decode image file"):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG broken")
        Predictor(cfg, path).predict(bad)


# --------------------------------------------------------------------------- evaluate_model


def _synthetic_cfg(root, kind):
    pose = kind == "pose"
    return config_from_dict({
        "model": {"num_stacks": 2, "channels": 16, "depth": 2,
                  "num_classes": 7 if pose else 3, "num_link_classes": 0 if pose else 2,
                  "tag_per_class": pose, "box_size": not pose,
                  "embedding_dim": 1 if pose else 4,
                  "heatmap_activation": "linear" if pose else "sigmoid"},
        "data": {"kind": kind, "source": "synthetic", "root": str(root), "input_size": 64,
                 "output_size": 16, "num_workers": 0,
                 "synthetic": {"kind": "pose" if pose else "graph", "num_train": 2,
                               "num_val": 5, "image_size": 64, "num_object_classes": 3,
                               "num_link_classes": 2}},
        "train": {"batch_size": 2},
        "eval": {"detection_threshold": 0.2}})


@pytest.mark.parametrize("kind", ["pose", "relations"])
def test_evaluate_model_on_synthetic_data(tmp_path, kind):
    cfg = _synthetic_cfg(tmp_path / "syn", kind)
    ds = build_dataset(cfg, "val")
    model = _tiny_from(cfg).train()
    metrics = evaluate_model(model, ds, cfg)
    assert model.training  # mode restored
    if kind == "pose":
        assert {"AP", "AP50", "AR"} <= set(metrics)
    else:
        assert {"R@20", "ngR@50", "mR@100", "object_recall", "object_AP"} <= set(metrics)
    assert all(np.isnan(v) or -1 <= v <= 1 for v in metrics.values())
    # A loader gives the same figures as the dataset.
    assert evaluate_model(model, build_dataloader(ds, cfg, "val"), cfg) == metrics
    preds = predict_dataset(model, ds, cfg)
    assert [p.image_id for p in preds] == list(ds.ids)
    cfg.eval.scales = [1.0, 2.0]
    cfg.eval.flip_test = True
    assert set(evaluate_model(model, ds, cfg)) == set(metrics)


def test_perfect_relation_predictions_score_one(tmp_path):
    cfg = _synthetic_cfg(tmp_path / "syn", "relations")
    ds = build_dataset(cfg, "val")
    preds = []
    for img_id in ds.ids:
        boxes, labels, links = ds.boxes(img_id), ds.labels(img_id), ds.links(img_id)
        n = len(labels)
        kp = np.zeros((n, 3, 3))
        kp[np.arange(n), labels, :2] = (boxes[:, :2] + boxes[:, 2:]) / 2
        kp[np.arange(n), labels, 2] = 1
        inst = Instances(kp, np.linspace(1, 0.5, n), np.zeros((n, 4)), labels, boxes)
        g = nx.MultiDiGraph()
        g.add_nodes_from(range(n))
        for s, o, r in links:
            g.add_edge(int(s), int(o), key=int(r), label=int(r), score=1.0)
        preds.append(Prediction(inst, g, (64, 64), img_id))
    out = score_predictions(preds, ds, cfg)
    assert sum(len(ds.links(i)) for i in ds.ids) > 0
    for k in cfg.eval.recall_ks:
        assert out[f"ngR@{k}"] == 1.0 and out[f"mR@{k}"] == 1.0 and out[f"R@{k}"] == 1.0
    assert out["object_recall"] == 1.0
    assert out["object_AP"] == pytest.approx(1.0)
