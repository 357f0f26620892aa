"""Oracle harness of the pose grouping: real COCO people rendered as perfect maps, decoded with
``aehg.group`` and scored with COCOeval (docs/design.md §4).

Each image of the development set (``tests/data/coco_kp_dev``, 136 people in 55 images; the
images without a person with keypoints are skipped) goes through the validation transform of
docs/design.md §7 (long side to a 512 input, centred, stride 4 → 128×128 maps, pixel centres).
Every non-crowd person with at least one labelled keypoint is rendered:

* **heatmaps**: a Gaussian of σ = 2 output pixels at each labelled keypoint (its exact sub-pixel
  position, peak 1), max-combined over people; then, with heatmap noise σ_h, Gaussian noise of
  std σ_h is added to every pixel and the result is clipped at 0. Keypoints are moved by
  (0.001, 0.002) px (``TIE_SHIFT``): COCO's integer keypoints often land exactly between two
  pixel centres, whose equal values would make two NMS peaks, which no network output has.
* **tags** (E = 1): the people of an image get the tag values 0, 1, …, n − 1 (``--spacing``
  apart, 1 by default, about what an AE network trained with the exp push gives) in a random
  order, plus one random offset. Part j of person n carries ``t_n + ε_nj`` with ε ~ N(0, σ_t),
  drawn once per person and part, on every pixel where that person's Gaussian of part j is the
  highest and above 1e-3: the whole blob the joint owns, so the tag read at a peak (and by
  refinement next to it) is exactly person tag + that joint's noise. Every other pixel of channel
  j belongs to the person with the nearest labelled keypoint (any part) and carries
  ``t_n + ε'_nj``, an independent draw of the same std: a network's tags away from the joints
  are untrained, so the noise peaks that σ_h creates there get tags as noisy as a real joint's,
  neither better nor worse.

The standard normal draws of image i and seed s come from ``default_rng([s, i])`` and are
scaled by σ_t and σ_h, so every noise level and method sees the same underlying draws (common
random numbers). Decoded people go back to image pixels (``Instances.to_image``) and are scored
with ``COCOeval(iouType="keypoints")`` (COCO sigmas, all people of the scored images; crowd
regions and people without keypoints are ignored by COCOeval as usual). AP is averaged over the
seeds.

Columns: the **ceiling** (the same NMS peaks, grouped by the ground truth: each peak of part j
goes to the person whose labelled part j is nearest, one-to-one, within 3 output pixels; the
other peaks are dropped; adjusted positions, score = mean part score; then aehg's refinement
with each person's true tag, which also finds the joints that NMS merged with a neighbour's),
the old
``greedy`` method, the ``default`` of ``aehg.group`` (method "layout"), and the default with
each of its options switched off in turn: ``-spatial`` (spatial_weight 0), ``flat`` (the flat
prior instead of COCO's), ``-conf`` (confidence_weight 0), ``-tiers`` (strong_ratio 0),
``-hold`` (hold_duplicates off), ``-merge`` (merge_ratio 0). Then the time per image of greedy
and default (one thread, median over repeats, mean over the images) at the data set's people
count (clean, and at tag noise 0.3 + heatmap noise 0.025) and on ``bench_group.py``'s
30-person input.

The layout prior is the shipped one, fitted on ``tests/data/coco_kp_ccby`` (not the
development set); ``--fit`` fits it on another file instead, e.g. on the development set to
evaluate on coco_kp_ccby. Examples::

    python benchmarks/bench_oracle.py                 # the full table, seeds 0 1 2
    python benchmarks/bench_oracle.py --data tests/data/coco_kp_ccby/person_keypoints_ccby.json \
        --fit tests/data/coco_kp_dev/person_keypoints_dev.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment
from timing import median_ms  # benchmarks/timing.py, beside this script

from aehg import Instances, group
from aehg.data.transforms import affine_matrix, compose, input_to_output
from aehg.decoding import PosePrior
from aehg.decoding.grouping import refine_instances
from aehg.decoding.peaks import find_peaks, subpixel
from aehg.evaluation.coco import keypoints_to_results
from aehg.io import read_json
from aehg.keypoints import COCO_OKS_SIGMAS

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "tests" / "data" / "coco_kp_dev" / "person_keypoints_dev.json"
CCBY = ROOT / "tests" / "data" / "coco_kp_ccby" / "person_keypoints_ccby.json"
INPUT, STRIDE, SIGMA = 512, 4, 2.0
OUT = INPUT // STRIDE
NMS, TOP_K, THRESHOLD = 5, 30, 0.1  # aehg.group's defaults, also used by the ceiling
CEILING_RADIUS = 3.0  # output pixels: a peak farther from every labelled part is dropped
# COCO keypoints are integers, so after the scaling many fall exactly between two pixel
# centres, whose Gaussian values are then exactly equal: two NMS peaks for one joint, which no
# network output has. A shift far below a pixel breaks those ties.
TIE_SHIFT = np.array([1e-3, 2e-3])
LEVELS = ((0.0, 0.0), (0.1, 0.0), (0.2, 0.0), (0.3, 0.0), (0.4, 0.0),
          (0.0, 0.025), (0.1, 0.025), (0.2, 0.025), (0.3, 0.025))


@dataclass
class Scene:
    """The people of one image in output-map pixels.

    Shapes:
        keypoints: (n, C, 3) x, y (map pixels), v (COCO visibility; > 0 = labelled)
    """

    image_id: int
    transform: np.ndarray  # 2×3, image → map pixels
    keypoints: np.ndarray


def load_scenes(path: Path) -> tuple[dict[str, Any], list[Scene]]:
    """The COCO dataset dict and one Scene per image with at least one person with keypoints."""
    dataset = read_json(path, "COCO keypoint annotation")
    by_image: dict[int, list[dict]] = {}
    for ann in dataset["annotations"]:
        if not ann.get("iscrowd", 0) and ann.get("num_keypoints", 0) > 0:
            by_image.setdefault(ann["image_id"], []).append(ann)
    scenes = []
    for img in dataset["images"]:
        anns = by_image.get(img["id"])
        if not anns:
            continue
        m = compose(input_to_output(INPUT, OUT), affine_matrix((img["height"], img["width"]),
                                                               INPUT))
        kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
        kp[..., :2] = kp[..., :2] @ m[:, :2].T + m[:, 2] + TIE_SHIFT
        scenes.append(Scene(img["id"], m, kp))
    return dataset, scenes


# --------------------------------------------------------------------------- rendering


@dataclass
class Draws:
    """The standard normal draws of one image (scaled by the noise levels when rendering).

    Shapes:
        order: (n,) tag rank of each person; offset: scalar
        joint, background: (n, C) tag noise of a joint's blob and of the rest of its region
        heat: (C, H, W) heatmap noise
    """

    order: np.ndarray
    offset: float
    joint: np.ndarray
    background: np.ndarray
    heat: np.ndarray


def draws(scene: Scene, seed: int, index: int) -> Draws:
    """The draws of image ``index`` for ``seed`` (independent of the noise levels)."""
    n, c = scene.keypoints.shape[:2]
    rng = np.random.default_rng([seed, index])
    return Draws(rng.permutation(n), float(rng.uniform(-0.5, 0.5)),
                 rng.standard_normal((n, c)), rng.standard_normal((n, c)),
                 rng.standard_normal((c, OUT, OUT)).astype(np.float32))


def render(scene: Scene, d: Draws, tag_noise: float, heat_noise: float, spacing: float = 1.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmaps, tags and the person tags of one image (see the module docstring).

    Shapes:
        heat: (C, H, W) float32, tags: (C, H, W) float32 (E = 1), person tags: (n,)
    """
    kp = scene.keypoints
    n, c = kp.shape[:2]
    yy, xx = np.mgrid[0:OUT, 0:OUT].astype(np.float32)
    labelled = kp[:, :, 2] > 0
    x = kp[:, :, 0, None, None].astype(np.float32)
    y = kp[:, :, 1, None, None].astype(np.float32)
    d2 = (xx - x) ** 2 + (yy - y) ** 2                       # (n, C, H, W)
    g = np.where(labelled[:, :, None, None], np.exp(-d2 / (2 * SIGMA ** 2)), 0.0)
    owner = g.argmax(0)                                      # (C, H, W)
    heat = np.take_along_axis(g, owner[None], 0)[0]
    ptags = (d.order * spacing + d.offset).astype(np.float64)
    region_d2 = np.where(labelled[:, :, None, None], d2, np.inf).min(1)  # (n, H, W)
    region = region_d2.argmin(0)                                         # (H, W)
    joint_tag = ptags[:, None] + tag_noise * d.joint                     # (n, C)
    back_tag = ptags[:, None] + tag_noise * d.background
    parts = np.arange(c)[:, None, None]
    tags = np.where(heat > 1e-3, joint_tag[owner, parts], back_tag[region[None], parts])
    if heat_noise > 0:
        heat = np.maximum(heat + heat_noise * d.heat, 0.0)
    return heat.astype(np.float32), tags.astype(np.float32), ptags


# --------------------------------------------------------------------------- decoding


def ceiling(heat: np.ndarray, tags: np.ndarray, scene: Scene, person_tags: np.ndarray
            ) -> Instances:
    """The detected peaks grouped by the ground truth, then refined with the true person tags
    (see the module docstring)."""
    kp = scene.keypoints
    n, c = kp.shape[:2]
    peaks = find_peaks(heat, NMS, THRESHOLD, TOP_K, per_channel=True)
    xs, ys = subpixel(heat, peaks.channel, peaks.pixel, True)
    px = np.stack([peaks.pixel % OUT, peaks.pixel // OUT], 1).astype(np.float64)
    out = np.zeros((n, c, 3), np.float32)
    for part in range(c):  # harness only
        cand = np.flatnonzero(peaks.channel == part)
        people = np.flatnonzero(kp[:, part, 2] > 0)
        if not cand.size or not people.size:
            continue
        dist = np.linalg.norm(px[cand, None] - kp[None, people, part, :2], axis=-1)
        r, k = linear_sum_assignment(np.where(dist <= CEILING_RADIUS, dist, 1e6))
        ok = dist[r, k] <= CEILING_RADIUS
        i, j = people[k[ok]], cand[r[ok]]
        out[i, part] = np.stack([xs[j], ys[j], peaks.score[j]], 1)
    keep = (out[:, :, 2] > 0).any(1)
    out = out[keep]
    scores = out[:, :, 2].mean(1)
    order = np.argsort(-scores, kind="stable")
    people = Instances(out[order], scores[order], person_tags[keep][order, None])
    return refine_instances(people, heat, tags)


# A decoder maps (heat, tags, scene, person tags) to instances.
Decoder = Callable[[np.ndarray, np.ndarray, Scene, np.ndarray], Instances]


def group_decoder(**kwargs: Any) -> Decoder:
    """A decoder calling ``aehg.group(heat, tags, **kwargs)``."""
    return lambda heat, tags, scene, person_tags: group(heat, tags, **kwargs)


# --------------------------------------------------------------------------- scoring


def keypoint_ap(dataset: dict[str, Any], results: list[dict], image_ids: Iterable[int]) -> float:
    """COCOeval keypoint AP (COCO sigmas) of ``results`` on ``image_ids``."""
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(COCO_OKS_SIGMAS)
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def results_of(inst: Instances, scene: Scene, missing: str = "centroid") -> list[dict]:
    """COCO results of one image's people (absent parts as ``eval.missing_keypoints``)."""
    people = inst.to_image(scene.transform)
    return keypoints_to_results(people.keypoints, people.scores, scene.image_id,
                                missing=missing)


def run_table(dataset: dict[str, Any], scenes: list[Scene], decoders: dict[str, Decoder],
              levels: Iterable[tuple[float, float]], seeds: Iterable[int], spacing: float,
              missing: str = "centroid") -> dict[tuple[float, float], dict[str, float]]:
    """AP per noise level and decoder, averaged over the seeds."""
    ids = [s.image_id for s in scenes]
    table: dict[tuple[float, float], dict[str, float]] = {}
    seeds = list(seeds)
    all_draws = {seed: [draws(s, seed, i) for i, s in enumerate(scenes)] for seed in seeds}
    for level in levels:
        sums = dict.fromkeys(decoders, 0.0)
        for seed in seeds:
            results: dict[str, list[dict]] = {name: [] for name in decoders}
            for scene, d in zip(scenes, all_draws[seed], strict=True):
                heat, tags, person_tags = render(scene, d, *level, spacing=spacing)
                for name, dec in decoders.items():
                    results[name] += results_of(dec(heat, tags, scene, person_tags), scene,
                                                missing)
            for name in decoders:
                sums[name] += keypoint_ap(dataset, results[name], ids)
        table[level] = {name: v / len(seeds) for name, v in sums.items()}
    return table


# The decoders of the table: the old method, the default, and the default with each of its
# options switched off in turn (docs/design.md §4).
OPTIONS_OFF = {
    "-spatial": {"spatial_weight": 0.0},
    "flat": {"pose_prior": "flat"},
    "-conf": {"confidence_weight": 0.0},
    "-tiers": {"strong_ratio": 0.0},
    "-hold": {"hold_duplicates": False},
    "-merge": {"merge_ratio": 0.0},
}


def decoders_for(prior: PosePrior | None) -> dict[str, Decoder]:
    """ceiling, greedy, default and the options switched off (``prior``: None = shipped)."""
    base: dict[str, Any] = {} if prior is None else {"pose_prior": prior}
    out: dict[str, Decoder] = {"ceiling": ceiling,
                               "greedy": group_decoder(method="greedy"),
                               "default": group_decoder(**base)}
    for name, kw in OPTIONS_OFF.items():
        out[name] = group_decoder(**{**base, **kw})
    return out


def timings(scenes: list[Scene], prior: PosePrior | None, repeats: int
            ) -> list[tuple[str, float, float]]:
    """(input, greedy ms, default ms): per image of the data set, clean and at tag noise 0.3 +
    heatmap noise 0.025 (seed 0; median over repeats, mean over the images), and
    bench_group.py's 30-person input (E = 1). Refinement on, as by default."""
    from bench_group import synthetic_people  # benchmarks/bench_group.py, beside this script

    base: dict[str, Any] = {} if prior is None else {"pose_prior": prior}
    rows = []
    people = sum(len(sc.keypoints) for sc in scenes) / len(scenes)
    for level in ((0.0, 0.0), (0.3, 0.025)):
        maps = [render(sc, draws(sc, 0, i), *level)[:2] for i, sc in enumerate(scenes)]
        ms = [float(np.mean([median_ms(lambda h=h, t=t, kw=kw: group(h, t, **kw), repeats)
                             for h, t in maps]))
              for kw in ({"method": "greedy"}, base)]
        rows.append((f"{people:.2f} people/image, noise {level[0]:g}/{level[1]:g}", *ms))
    heat, tags = synthetic_people(30, 1)
    tags = tags[:, 0]
    rows.append(("bench_group 30 people, E = 1",
                 median_ms(lambda: group(heat, tags, method="greedy"), 10 * repeats),
                 median_ms(lambda: group(heat, tags, **base), 10 * repeats)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEV, help="COCO person keypoints JSON")
    ap.add_argument("--fit", type=Path, default=None,
                    help="fit the layout prior on this COCO JSON (default: the shipped prior, "
                         "fitted on tests/data/coco_kp_ccby)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--spacing", type=float, default=1.0, help="tag distance between people")
    ap.add_argument("--repeats", type=int, default=30, help="timing repeats per image")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--missing", choices=("centroid", "zero"), default="centroid",
                    help="where absent parts go in the COCO results (eval.missing_keypoints)")
    ap.add_argument("--only", nargs="+", default=None,
                    help="table columns to compute (default: all), e.g. greedy default")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # the decoders' NMS dilates with OpenCV
    dataset, scenes = load_scenes(args.data)
    people = sum(len(s.keypoints) for s in scenes)
    prior = None if args.fit is None else PosePrior.from_coco(args.fit)
    fitted_on = CCBY if args.fit is None else args.fit
    print(f"oracle harness | {args.data.name}: {people} people in {len(scenes)} images | "
          f"maps 17x{OUT}x{OUT}, sigma {SIGMA:g} | tag spacing {args.spacing:g} | "
          f"seeds {' '.join(map(str, args.seeds))} | threads {torch.get_num_threads()}")
    print(f"layout prior fitted on {fitted_on.name}"
          + (" -- the evaluated set itself: not a development measurement"
             if fitted_on.resolve() == args.data.resolve() else ""))
    decoders = decoders_for(prior)
    if args.only:
        decoders = {k: v for k, v in decoders.items() if k in args.only}
    print(f"absent parts in the results: {args.missing}")
    table = run_table(dataset, scenes, decoders, LEVELS, args.seeds, args.spacing,
                      args.missing)
    names = list(decoders)
    print("keypoint AP (COCOeval, mean over the seeds); '-x': the default with option x off, "
          "'flat': with the flat prior")
    print(f"{'tag':>4} {'heat':>5} " + " ".join(f"{n:>8}" for n in names))
    for (t, h), row in table.items():
        print(f"{t:>4.2f} {h:>5.3f} " + " ".join(f"{row[n]:>8.3f}" for n in names))
    if not args.no_timing:
        print("ms per image (one thread, median over repeats)")
        print(f"{'input':<40} {'greedy':>7} {'default':>7}")
        for what, greedy, default in timings(scenes, prior, args.repeats):
            print(f"{what:<40} {greedy:>7.2f} {default:>7.2f}")


if __name__ == "__main__":
    main()
