"""Property tests of aehg.group / aehg.decode_objects on random shapes, values and thresholds."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from aehg.decoding import METHODS, decode_objects, group

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

finite = st.one_of(
    st.floats(-2.0, 2.0, width=32),
    st.sampled_from([0.0, 0.5, 1.0]),  # plateaus and exact ties
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # up to ±3.4e38
)


@st.composite
def problems(draw, objects: bool = False):
    b = draw(st.sampled_from([None, 1, 2]))
    c = draw(st.integers(1, 4))
    e = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ct = draw(st.sampled_from([c, 1]))
    lead = () if b is None else (b,)
    heat = draw(arrays(np.float32, lead + (c, h, w), elements=finite))
    tag_shape = lead + ((ct, h, w) if e == 1 and draw(st.booleans()) else (ct, e, h, w))
    tags = draw(arrays(np.float32, tag_shape, elements=finite))
    bad = draw(st.sampled_from([None, None, None, "heatmaps", "tags"]))
    if bad:
        arr = heat if bad == "heatmaps" else tags
        arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from(
            [np.nan, np.inf, -np.inf]))
    kw = dict(nms_kernel=draw(st.sampled_from([1, 3, 5])), top_k=draw(st.integers(1, 6)),
              detection_threshold=draw(st.floats(0.0, 1.5)))
    if not objects:
        kw.update(tag_threshold=draw(st.floats(0.01, 5.0)),
                  max_instances=draw(st.one_of(st.none(), st.integers(0, 6))),
                  adjust=draw(st.booleans()),
                  part_order=draw(st.one_of(st.none(), st.permutations(range(c)))),
                  method=draw(st.sampled_from(METHODS)))
        if kw["method"] == "layout":
            # Each option of the layout matching on or off (its default, or switched off).
            kw.update(spatial_weight=draw(st.sampled_from([0.1, 0.0, 2.0])),
                      confidence_weight=draw(st.sampled_from([0.5, 0.0, 1.0])),
                      strong_ratio=draw(st.sampled_from([0.5, 0.0, 1.0])),
                      hold_duplicates=draw(st.booleans()),
                      merge_ratio=draw(st.sampled_from([0.8, 0.0, 3.0])))
    return heat, tags, bad, kw


def _peak_ranks(heat: np.ndarray, kernel: int, threshold: float) -> dict:
    """(part, y, x) → rank among the part's NMS peaks (by score, then pixel), by scipy."""
    ref = ndimage.maximum_filter(heat, size=(1, kernel, kernel), mode="constant",
                                 cval=-np.inf)
    ranks = {}
    for part in range(heat.shape[0]):
        ys, xs = np.nonzero((ref[part] == heat[part]) & (heat[part] > threshold))
        order = np.lexsort((ys * heat.shape[2] + xs, -heat[part, ys, xs]))
        for rank, i in enumerate(order):
            ranks[(part, int(ys[i]), int(xs[i]))] = rank
    return ranks


def _check_image(inst, heat, kw, refine):
    c, h, w = heat.shape
    kp = inst.keypoints
    assert kp.shape[1:] == (c, 3) and kp.dtype == np.float32
    if kw.get("max_instances") is not None:
        assert len(inst) <= kw["max_instances"]
    present = kp[:, :, 2] > 0
    assert (kp[~present] == 0).all()
    assert (kp[..., 0][present] >= 0).all() and (kp[..., 0][present] <= w - 1).all()
    assert (kp[..., 1][present] >= 0).all() and (kp[..., 1][present] <= h - 1).all()
    assert np.all(np.diff(inst.scores) <= 0)
    if refine:
        return
    assert present.any(1).all()  # every instance has a part
    # atol: float32 subnormal scores (hypothesis draws heat ~1e-45) have no relative precision.
    np.testing.assert_allclose(inst.scores, kp[:, :, 2].mean(1, dtype=np.float64), rtol=1e-5,
                               atol=float(np.finfo(np.float32).tiny))
    if kw.get("adjust", True):
        return
    # Integer pixels: each is a distinct NMS peak above the threshold within the top_k.
    ranks = _peak_ranks(heat, kw["nms_kernel"], kw["detection_threshold"])
    used = []
    for n, p in zip(*np.nonzero(present), strict=True):
        key = (int(p), int(kp[n, p, 1]), int(kp[n, p, 0]))
        assert key in ranks and ranks[key] < kw["top_k"]
        assert kp[n, p, 2] == heat[key]  # its score is its heat
        used.append(key)
    assert len(used) == len(set(used))  # each candidate used at most once
    if kw.get("max_instances", 0) is None:
        # With no cap every candidate ends in exactly one instance.
        assert set(used) == {k for k, r in ranks.items() if r < kw["top_k"]}


@SETTINGS
@given(problems(), st.booleans())
def test_group_properties(problem, refine):
    heat, tags, bad, kw = problem
    try:
        out = group(heat, tags, refine=refine, **kw)
    except ValueError as exc:
        assert bad is not None and str(exc).startswith(f"{bad}: contains NaN")
        return
    assert bad is None
    batched = heat.ndim == 4
    outs = out if batched else [out]
    heats = heat if batched else heat[None]
    tag_list = tags if batched else tags[None]
    assert len(outs) == len(heats)
    again = group(heat, tags, refine=refine, **kw)  # deterministic
    for a, b in zip(outs, again if batched else [again], strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.tags, b.tags)
    for i, (inst, hm) in enumerate(zip(outs, heats, strict=True)):
        _check_image(inst, hm, kw, refine)
        e = 1 if tag_list.ndim == 4 else tag_list.shape[2]
        assert inst.tags.shape == (len(inst), e)
        if batched:  # batched equals per-image
            single = group(hm, tag_list[i], refine=refine, **kw)
            np.testing.assert_array_equal(single.keypoints, inst.keypoints)
            np.testing.assert_array_equal(single.tags, inst.tags)
        if refine:  # refinement only fills absent parts
            plain = group(hm, tag_list[i], refine=False, **kw)
            was = plain.keypoints[:, :, 2] > 0
            np.testing.assert_array_equal(inst.keypoints[was], plain.keypoints[was])
            np.testing.assert_array_equal(inst.scores, plain.scores)


@SETTINGS
@given(problems(objects=True), st.booleans())
def test_decode_objects_properties(problem, with_sizes):
    heat, tags, bad, kw = problem
    sizes = None
    if with_sizes:
        sizes = np.random.default_rng(0).normal(0, 3, heat.shape[:-3] + (2,) + heat.shape[-2:])
    try:
        out = decode_objects(heat, tags, sizes, **kw)
    except ValueError as exc:
        assert bad is not None and str(exc).startswith(f"{bad}: contains NaN")
        return
    assert bad is None
    outs = out if heat.ndim == 4 else [out]
    heats = heat if heat.ndim == 4 else heat[None]
    for objs, hm in zip(outs, heats, strict=True):
        c, h, w = hm.shape
        assert len(objs) <= kw["top_k"]
        assert np.all(np.diff(objs.scores) <= 0)
        kp = objs.keypoints
        present = kp[:, :, 2] > 0
        assert (present.sum(1) == 1).all()
        assert (np.argmax(present, 1) == objs.labels).all()
        x, y = kp[np.arange(len(objs)), objs.labels, 0], kp[np.arange(len(objs)), objs.labels, 1]
        assert ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).all()
        ranks = _peak_ranks(hm, kw["nms_kernel"], kw["detection_threshold"])
        pix = {(int(lab), int(round(yy)), int(round(xx)))
               for lab, xx, yy in zip(objs.labels, x, y, strict=True)}
        assert len(pix) == len(objs) and pix <= set(ranks)  # distinct peaks
        if with_sizes:
            assert (objs.boxes[:, 2:] >= objs.boxes[:, :2]).all()
        else:
            assert objs.boxes is None
        # Every decoded object is a peak; the count is min(top_k, number of peaks).
        assert len(objs) == min(kw["top_k"], len(ranks))
