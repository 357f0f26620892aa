"""Sub-pixel peak positions (aehg.decoding.peaks.subpixel), both rules against hand values."""

import numpy as np
import pytest
import torch

from aehg.decoding.peaks import subpixel


def _gaussian(cx: float, cy: float, sigma: float = 1.0, size: int = 9) -> np.ndarray:
    y, x = np.mgrid[:size, :size].astype(np.float64)
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))[None].astype(np.float32)


@pytest.mark.parametrize("cx, cy", [(4.0, 4.0), (4.3, 3.8), (3.6, 4.45), (4.49, 4.49)])
def test_quadratic_recovers_the_centre_of_a_gaussian(cx, cy):
    heat = _gaussian(cx, cy)
    pixel = np.array([int(np.argmax(heat[0]))])
    xs, ys = subpixel(heat, np.array([0]), pixel, True, "quadratic")
    # float32 heat: the log parabola is exact up to rounding.
    assert xs[0] == pytest.approx(cx, abs=1e-3) and ys[0] == pytest.approx(cy, abs=1e-3)
    qx, qy = subpixel(heat, np.array([0]), pixel, True, "quarter")
    assert abs(xs[0] - cx) <= abs(qx[0] - cx) + 1e-6
    assert abs(ys[0] - cy) <= abs(qy[0] - cy) + 1e-6


def test_quarter_rule_and_tensor_input_match_numpy():
    heat = np.zeros((2, 5, 5), np.float32)
    heat[1, 2, 2], heat[1, 2, 3], heat[1, 1, 2] = 1.0, 0.5, 0.2   # right higher, up higher
    pixel = np.array([12])
    assert [float(v[0]) for v in subpixel(heat, np.array([1]), pixel, True)] == [2.25, 1.75]
    for method in ("quarter", "quadratic"):
        a = subpixel(heat, np.array([1]), pixel, True, method)
        b = subpixel(torch.from_numpy(heat), np.array([1]), pixel, True, method)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # Quadratic on log heat: right neighbour 0.5, left 0 (floored at 1e-12): a step right.
    x, y = subpixel(heat, np.array([1]), pixel, True, "quadratic")
    lb, la, lc = np.log(1e-12), 0.0, np.log(0.5)
    assert x[0] == pytest.approx(2 + (lb - lc) / (2 * (lb - 2 * la + lc)), abs=1e-6)
    assert 2.0 < x[0] <= 2.5 and 1.5 <= y[0] < 2.0


def test_flat_border_and_disabled_cases():
    heat = np.ones((1, 3, 3), np.float32)            # flat: no bend, no step
    assert [float(v[0]) for v in subpixel(heat, np.array([0]), np.array([4]), True,
                                          "quadratic")] == [1.0, 1.0]
    corner = _gaussian(0.2, 0.0, size=3)              # at the corner the missing side is itself
    xs, ys = subpixel(corner, np.array([0]), np.array([0]), True, "quadratic")
    assert 0.0 <= xs[0] <= 0.5 and ys[0] == 0.0
    xs, ys = subpixel(corner, np.array([0]), np.array([0]), False, "quadratic")
    assert (xs[0], ys[0]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="subpixel method.*'cubic'"):
        subpixel(corner, np.array([0]), np.array([0]), True, "cubic")


def test_group_and_single_person_decoding_take_the_quadratic_rule():
    from aehg import group
    from aehg.decoding.single import decode_single

    # Two people of 3 parts at off-grid positions; tags 0 and 5.
    truth = np.array([[[3.3, 4.2], [8.6, 5.4], [12.2, 11.7]],
                      [[20.7, 3.6], [24.4, 9.3], [18.1, 20.2]]])
    y, x = np.mgrid[:32, :32].astype(np.float64)
    heat = np.zeros((3, 32, 32), np.float32)
    tags = np.zeros((3, 32, 32), np.float32)
    for person, t in zip(truth, (0.0, 5.0), strict=True):
        for c, (cx, cy) in enumerate(person):
            g = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 2.0)
            heat[c] = np.maximum(heat[c], g)
            tags[c][g > 0.01] = t
    err = {}
    for method in ("quarter", "quadratic"):
        inst = group(heat, tags, nms_kernel=3, detection_threshold=0.2, subpixel_method=method)
        kp = inst.keypoints[np.argsort(inst.tags[:, 0])][:, :, :2]
        err[method] = np.abs(kp - truth).max()
    assert err["quadratic"] < 1e-3 < 0.1 < err["quarter"]
    single = decode_single(heat[:, :16, :16], subpixel_method="quadratic")
    np.testing.assert_allclose(single.keypoints[0, :2, :2], truth[0, :2], atol=1e-3)
    with pytest.raises(ValueError, match="subpixel_method.*'dark'"):
        group(heat, tags, subpixel_method="dark")


def test_eval_config_names_a_wrong_subpixel_rule():
    from aehg.config import ConfigError, load_config

    assert load_config(None, ["eval.subpixel=quadratic"]).eval.subpixel == "quadratic"
    with pytest.raises(ConfigError, match="eval.subpixel"):
        load_config(None, ["eval.subpixel=cubic"])
