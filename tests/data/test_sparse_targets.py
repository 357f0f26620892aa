"""Sparse targets rendered on the device equal the dense targets (aehg.data.render).

The reference is ``build_targets(..., sparse=False)`` (itself checked against a naive loop in
test_targets.py) and, for hand-placed peaks at the borders and overlapping, a naive loop here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from aehg.config import AugmentConfig, load_config
from aehg.data import CocoKeypointDataset, RelationDataset, convert_visual_genome
from aehg.data.loader import build_dataloader, build_dataset, collate
from aehg.data.render import TargetSpec, render_heatmaps, render_targets, unpack_mask
from aehg.data.targets import DENSE_KEYS, SPARSE_KEYS, build_targets, gaussian_patch

DATA = Path(__file__).parent
COCO = DATA / "coco_kp_ccby"
VG = DATA / "visual_genome_sample"


def _tensors(targets):
    return {k: torch.from_numpy(v) for k, v in targets.items()}


def _assert_batch_equal(rendered, dense):
    """Every dense key to 1e-6 (the maps) or exactly (index lists, masks)."""
    assert set(rendered) == set(dense)
    for key in dense:
        if key == "meta":
            continue
        r, d = rendered[key], dense[key]
        assert r.shape == d.shape and r.dtype == d.dtype, key
        if key in ("heatmaps", "link_heatmaps"):
            torch.testing.assert_close(r, d, rtol=0, atol=1e-6, msg=key)
        else:
            assert torch.equal(r, d), key


def _naive(points, shape, sigma):
    """max over points of exp(−d²/2σ²) within the patch radius; (B, K, H, W)."""
    out = np.zeros(shape, dtype=np.float32)
    r = gaussian_patch(sigma).shape[0] // 2
    for b, k, py, px in points:
        for y in range(max(py - r, 0), min(py + r + 1, shape[2])):
            for x in range(max(px - r, 0), min(px + r + 1, shape[3])):
                v = np.float32(math.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2)))
                out[b, k, y, x] = max(out[b, k, y, x], v)
    return out


# --------------------------------------------------------------------------- hand-placed peaks


def test_border_and_overlapping_peaks_match_a_naive_loop_and_the_dense_targets():
    h, w, sigma = 12, 10, 1.5
    # Corners, an edge, a .5 rounding up to the last column, two parts one pixel apart in one
    # channel (overlap) and two people on one pixel; one part outside (not drawn).
    parts = np.array([
        [[0.0, 0.0, 2], [9.0, 11.0, 1], [9.4, 3.0, 1]],
        [[0.0, 11.0, 1], [8.5, 3.0, 2], [-0.6, 5.0, 1]],
        [[4.0, 6.0, 1], [5.0, 6.0, 1], [4.0, 6.0, 1]],
        [[4.0, 6.0, 1], [9.0, 0.0, 1], [0.0, 5.0, 0]],
    ])
    links = np.array([[0, 1, 0], [0, 1, 0], [2, 3, 1], [1, 3, 1]])
    kw = dict(sigma=sigma, links=links, num_link_classes=2, max_instances=3)
    dense, _ = build_targets(parts, (h, w), **kw)
    sparse, _ = build_targets(parts, (h, w), sparse=True, **kw)
    assert set(sparse) == (set(dense) - set(DENSE_KEYS)) | set(SPARSE_KEYS)
    assert sparse["heat_peaks"].dtype == np.int16 and sparse["heat_peaks"].shape == (10, 3)
    batch = render_targets(collate([_tensors(sparse)]), TargetSpec(3, 2, h, w, sigma))
    _assert_batch_equal(batch, collate([_tensors(dense)]))
    peaks = [(0, 0, 0, 0), (0, 1, 11, 9), (0, 2, 3, 9), (0, 0, 11, 0), (0, 1, 3, 9),
             (0, 0, 6, 4), (0, 1, 6, 5), (0, 2, 6, 4), (0, 0, 6, 4), (0, 1, 0, 9)]
    np.testing.assert_allclose(batch["heatmaps"].numpy(), _naive(peaks, (1, 3, h, w), sigma),
                               rtol=0, atol=1e-6)
    assert batch["heatmaps"][0, 1, 3, 9] == 1.0 and batch["heatmaps"][0, 1, 3, 8] < 1.0
    # Links at the floored midpoints of the instance centres (mean of visible parts).
    centres = [(parts[i, parts[i, :, 2] > 0, :2]).mean(axis=0) for i in range(4)]
    link_points = []
    for s, d, c in links:
        mx, my = np.floor((centres[s] + centres[d]) / 2).astype(int)
        link_points.append((0, c, my, mx))
    np.testing.assert_allclose(batch["link_heatmaps"].numpy(),
                               _naive(link_points, (1, 2, h, w), sigma), rtol=0, atol=1e-6)


def test_batch_renders_each_sample_into_its_own_slice():
    rng = np.random.default_rng(3)
    h = w = 16
    spec = TargetSpec(4, 2, h, w, 2.0)
    sparse, dense = [], []
    for i in range(5):
        n = 0 if i == 2 else 4                      # an image without people in the middle
        parts = np.concatenate([rng.uniform(-2, 17, (n, 4, 2)), rng.integers(0, 3, (n, 4, 1))],
                               axis=-1)
        links = np.stack([rng.integers(0, max(n, 1), 3), rng.integers(0, max(n, 1), 3),
                          rng.integers(0, 2, 3)], axis=1) if n else None
        mask = (rng.random((h, w)) > 0.3).astype(np.float32)
        kw = dict(mask=mask, links=links, num_link_classes=2, max_instances=3)
        sparse.append(_tensors(build_targets(parts, (h, w), sparse=True, **kw)[0]))
        dense.append(_tensors(build_targets(parts, (h, w), **kw)[0]))
    batch = collate(sparse)
    peaks = batch["heat_peaks"]
    assert peaks.shape == (sum(len(s["heat_peaks"]) for s in sparse), 4)
    assert peaks[:, 0].tolist() == sorted(peaks[:, 0].tolist())
    assert not (peaks[:, 0] == 2).any()
    rendered = render_targets(batch, spec)
    _assert_batch_equal(rendered, collate(dense))
    assert (rendered["heatmaps"][2] == 0).all() and rendered["heatmaps"].sum() > 0
    for i in range(5):                              # one sample alone gives its slice
        alone = render_targets(collate([sparse[i]]), spec)
        assert torch.equal(alone["heatmaps"][0], rendered["heatmaps"][i])
        assert torch.equal(alone["mask"][0], rendered["mask"][i])


def test_render_heatmaps_clips_and_skips_rows_outside_the_shape():
    patch = torch.from_numpy(gaussian_patch(1.0))
    peaks = torch.tensor([[0, 0, 0, 0], [1, 1, 3, 4], [2, 0, 1, 1], [0, 2, 1, 1]])
    out = render_heatmaps(peaks, (2, 2, 4, 5), patch)
    ref = _naive([(0, 0, 0, 0), (1, 1, 3, 4)], (2, 2, 4, 5), 1.0)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    assert render_heatmaps(peaks[:0], (2, 2, 4, 5), patch).abs().sum() == 0


def test_unpack_mask_round_trip_with_a_size_not_a_multiple_of_8():
    mask = (np.random.default_rng(0).random((3, 7, 5)) > 0.5)
    bits = torch.from_numpy(np.stack([np.packbits(m.reshape(-1)) for m in mask]))
    assert bits.shape == (3, 5)
    assert torch.equal(unpack_mask(bits, 7, 5), torch.from_numpy(mask.astype(np.float32)))


def test_errors_name_the_input():
    with pytest.raises(ValueError, match=r"mask: sparse targets need a mask of 0s and 1s"):
        build_targets(np.zeros((0, 2, 3)), (4, 4), mask=np.full((4, 4), 0.5), sparse=True)
    with pytest.raises(ValueError, match=r"mask_bits: expected shape \(B, 2\) for 4x4 maps"):
        unpack_mask(torch.zeros(1, 3, dtype=torch.uint8), 4, 4)
    with pytest.raises(ValueError, match=r"peaks: expected shape \(P, 4\)"):
        render_heatmaps(torch.zeros(2, 3, dtype=torch.int64), (1, 1, 4, 4),
                        torch.from_numpy(gaussian_patch(1.0)))
    sparse, _ = build_targets(np.zeros((0, 2, 3)), (4, 4), sparse=True)
    batch = collate([_tensors(sparse)])
    del batch["mask_bits"]
    with pytest.raises(ValueError, match=r"batch: has 'heat_peaks' but no 'mask_bits'"):
        render_targets(batch, TargetSpec(2, 0, 4, 4, 2.0))


def test_a_dense_batch_passes_through():
    dense, _ = build_targets(np.array([[[1.0, 2.0, 1.0]]]), (4, 4))
    batch = collate([_tensors(dense)])
    out = render_targets(batch, TargetSpec(1, 0, 4, 4, 2.0))
    assert out.keys() == batch.keys() and all(out[k] is batch[k] for k in batch)


# --------------------------------------------------------------------------- real samples


def test_coco_samples_with_crowd_masks_through_the_dataset():
    """COCO pose settings (512 → 128, σ 2, 30 people), training augmentation at a fixed seed;
    images 129648 and 174375 hold crowd regions."""
    kw = dict(train=True, input_size=512, output_size=128, sigma=2.0, max_instances=30,
              augment=AugmentConfig(), seed=5)
    json_path, images = COCO / "person_keypoints_ccby.json", COCO / "images"
    dense_ds = CocoKeypointDataset(json_path, images, **kw)
    sparse_ds = CocoKeypointDataset(json_path, images, sparse_targets=True, **kw)
    picks = [dense_ds.ids.index(i) for i in (129648, 174375)] + [0, 1]
    dense = [dense_ds[i] for i in picks]
    sparse = [sparse_ds[i] for i in picks]
    assert not set(DENSE_KEYS) & set(sparse[0]) and "heat_peaks" in sparse[0]
    assert all(torch.equal(d["image"], s["image"]) for d, s in zip(dense, sparse, strict=True))
    assert (dense[0]["mask"] == 0).any() and (dense[1]["mask"] == 0).any()   # crowds masked
    rendered = render_targets(collate(sparse), TargetSpec(17, 0, 128, 128, 2.0))
    _assert_batch_equal(rendered, collate(dense))
    # The sparse sample saves more than the dense heatmaps' bytes (peaks and bits < the mask).
    nbytes = {name: sum(v.numel() * v.element_size() for k, v in s.items() if k != "meta")
              for name, s in (("dense", dense[0]), ("sparse", sparse[0]))}
    assert nbytes["dense"] - nbytes["sparse"] > 17 * 128 * 128 * 4


@pytest.fixture(scope="module")
def vg_json(tmp_path_factory):
    data, _ = convert_visual_genome(VG / "scene_graphs_first100.json",
                                    VG / "image_data_first100.json",
                                    VG / "VG-SGG-dicts-with-attri.json",
                                    VG / "xu_object_alias.txt", VG / "xu_predicate_alias.txt")
    path = tmp_path_factory.mktemp("vg") / "vg150.json"
    path.write_text(json.dumps(data))
    return path


def test_visual_genome_samples_at_vg150_settings(vg_json, tmp_path):
    """VG150 (150 classes, 50 predicates, shared tags, boxes), 512 → 128, 64 objects, 128 links;
    the real annotations on blank images of their sizes, training augmentation."""
    kw = dict(train=True, input_size=512, output_size=128, sigma=2.0, max_instances=64,
              max_links=128, tag_per_class=False, augment=AugmentConfig(), seed=7)
    dense_ds = RelationDataset(vg_json, tmp_path, **kw)
    sparse_ds = RelationDataset(vg_json, tmp_path, sparse_targets=True, **kw)
    assert dense_ds.num_classes == 150 and dense_ds.num_predicates == 50
    # The images with the most links: overlapping link Gaussians of one predicate.
    picks = sorted(range(len(dense_ds)), key=lambda i: -len(dense_ds.links(dense_ds.ids[i])))[:3]
    for i in picks:
        info = dense_ds.coco.imgs[dense_ds.ids[i]]
        (tmp_path / info["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / info["file_name"]),
                    np.full((info["height"], info["width"], 3), 128, np.uint8))
    dense = [dense_ds[i] for i in picks]
    sparse = [sparse_ds[i] for i in picks]
    assert sum(s["meta"]["stats"]["link_collisions"] for s in dense) > 0
    assert all(len(s["link_peaks"]) > 0 for s in sparse)
    rendered = render_targets(collate(sparse), TargetSpec(150, 50, 128, 128, 2.0))
    _assert_batch_equal(rendered, collate(dense))


# --------------------------------------------------------------------------- synthetic data


def _synthetic_cfg(root, kind, *extra):
    base = [f"data.root={root}", "data.source=synthetic", "data.synthetic.num_train=4",
            "data.synthetic.num_val=1", "data.synthetic.image_size=64", "data.input_size=64",
            "data.output_size=16", "data.sigma=1.5", "data.num_workers=0",
            "train.batch_size=4", "model.num_stacks=1", "model.channels=16"]
    kinds = {
        "pose": ["data.kind=pose", "data.synthetic.kind=pose", "model.num_classes=7"],
        "graph": ["data.kind=relations", "data.synthetic.kind=graph", "model.num_classes=4",
                  "model.num_link_classes=3", "model.tag_per_class=false",
                  "model.box_size=true", "data.synthetic.max_objects=4"],
        "single": ["data.kind=single_pose", "data.synthetic.kind=single",
                   "model.num_classes=16", "model.embedding_dim=0"],
    }
    return load_config(None, [*base, *kinds[kind], *extra])


@pytest.mark.parametrize("kind,extra", [
    ("pose", ()),
    ("pose", ("model.tag_per_class=false",)),
    ("graph", ()),
    ("graph", ("model.object_slots=2", "model.relation_slots=3")),
    ("single", ()),
], ids=["pose", "pose-shared-tags", "graph", "graph-slots", "single-pose"])
def test_synthetic_loader_batches(tmp_path, kind, extra):
    cfg = _synthetic_cfg(tmp_path, kind, *extra)
    dense = next(iter(build_dataloader(build_dataset(cfg, "train"), cfg, "train")))
    sparse = next(iter(build_dataloader(build_dataset(cfg, "train", sparse_targets=True), cfg,
                                        "train")))
    assert "heatmaps" not in sparse and sparse["heat_peaks"].shape[1] == 4
    assert dense["heatmaps"].amax() == 1.0
    _assert_batch_equal(render_targets(sparse, TargetSpec.from_config(cfg)), dense)
