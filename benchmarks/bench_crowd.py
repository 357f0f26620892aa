"""Crowd decoding: aehg.group against a re-statement of the 2017 AE decoder, side by side.

The input (generated here, seedable) is a crowd: 30 people of random size (25–45 px high) at
random places on 17×128×128 maps, overlapping, each a standing person (bench_group's layout)
turned by up to ±20° with its parts jittered; Gaussian parts (σ = 2), Gaussian noise on every
heatmap pixel (clipped to [0, 1]); E = 1 tags, the people's tags 1 apart in a random order, each
part's tag map holding the tag of the person whose part is nearest, with noise per part (over
its whole region) and per pixel.

The reference, ``ae2017_parse`` below, is a plain re-statement of the decoder of the 2017
associative-embedding code (pose-ae-train: its heatmap parser, the matching by tag and the
refinement of its test script), written for this benchmark: 3×3 max-pool NMS, the best 30 per
part, parts matched one at a time in a fixed order to the first 30 instances' mean tags by a
Hungarian matching on ``round(d) · 100 − heat`` (scipy's ``linear_sum_assignment`` in place of
``munkres``), joined when d < 1, skipping a part once 30 instances exist; the +0.5 / ±0.25
adjustment; then, per person, the argmax of ``heat − round(|tag − mean tag|)`` for every part,
filling the missing ones. Thresholds are its test settings (detection 0.1, tag 1). Its work
follows the original's order, which matters for the time: the mean tags of the first 30
instances are computed for every part before the skip, so a skipped part still costs them.
Where it departs from the original it is faster, never slower: scipy's compiled assignment
instead of the pure-Python ``munkres``, the maps wrapped (``from_numpy``) rather than copied
into tensors with ``requires_grad``, the refinement's tag look-up vectorised. (Not a time
matter: the original's refinement clamps the lower neighbour's row at the number of parts
minus one, a slip; here at the map's last row.)

Both run on one thread in the same loop (interleaved), and the same quality check is applied to
both, on the best 30 people by score (COCO evaluates at most 20): a decoded part belongs to
the ground-truth person whose same part is nearest within 3 px (else it is stray); a person is
pure when all its parts belong to one ground-truth person. Last, the stages of both on seed 0,
each timed alone (thread CPU time: on a shared machine, preemption does not inflate it).
Example::

    python benchmarks/bench_crowd.py --repeats 100 --seeds 3
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from bench_group import STANDING  # benchmarks/bench_group.py, beside this script
from scipy.optimize import linear_sum_assignment
from timing import median_ms  # benchmarks/timing.py, beside this script

try:  # the original's solver (pure Python; optional: pip install munkres==1.1.4)
    from munkres import Munkres
except ImportError:
    Munkres = None

from aehg import group
from aehg.decoding.grouping import refine_instances
from aehg.decoding.peaks import find_peaks, gather, object_inputs, subpixel

PARTS, SIZE, SIGMA, PEOPLE = 17, 128, 2.0, 30
MATCH_RADIUS = 3.0  # px: a decoded part further than this from every true part is stray


def munkres_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original's ``py_max_match``: ``Munkres().compute`` on the cost matrix."""
    pairs = np.array(Munkres().compute(cost.tolist()), dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


# The reference's assignment solver, chosen in main(): munkres (the original's) or scipy.
ASSIGN: list[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = [linear_sum_assignment]


# --------------------------------------------------------------------------- the input


def crowd_input(n: int = PEOPLE, seed: int = 0, heat_noise: float = 0.025,
                tag_noise: float = 0.15, pixel_tag_noise: float = 0.05
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maps of a crowd of n people.

    Returns:
        heatmaps (17, 128, 128) float32, tags (17, 128, 128) float32 (E = 1), the true part
        positions (n, 17, 2) (x, y in pixels) and their visibility (n, 17) bool (inside the
        map; only visible parts are rendered).
    """
    rng = np.random.default_rng(seed)
    height = rng.uniform(25, 45, n)
    centre = rng.uniform(8, SIZE - 8, (n, 2))
    angle = rng.uniform(-math.radians(20), math.radians(20), n)
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], 1),
                    np.stack([np.sin(angle), np.cos(angle)], 1)], 1)  # (n, 2, 2)
    layout = STANDING[None] + rng.normal(0, 0.03, (n, PARTS, 2))
    pos = centre[:, None] + height[:, None, None] * np.einsum("nij,npj->npi", rot, layout)
    visible = ((pos >= 0) & (pos <= SIZE - 1)).all(2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    d2 = ((xx[None, None] - pos[:, :, 0, None, None]) ** 2
          + (yy[None, None] - pos[:, :, 1, None, None]) ** 2)  # (n, 17, H, W)
    d2 = np.where(visible[:, :, None, None], d2, np.inf)
    heat = np.exp(-d2.min(0) / (2 * SIGMA ** 2))
    heat = np.clip(heat + rng.normal(0, heat_noise, heat.shape), 0, 1)
    person_tag = rng.permutation(n).astype(np.float64)
    part_tag = person_tag[:, None] + rng.normal(0, tag_noise, (n, PARTS))
    owner = d2.argmin(0)  # (17, H, W): the person whose part is nearest
    tags = part_tag[owner, np.arange(PARTS)[:, None, None]]
    tags = tags + rng.normal(0, pixel_tag_noise, tags.shape)
    return heat.astype(np.float32), tags.astype(np.float32), pos, visible


# --------------------------------------------------------------------------- the reference

AE2017_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


def ae2017_candidates(heat: np.ndarray, tags: np.ndarray, top_k: int = 30
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """3×3 max-pool NMS and the best ``top_k`` per part, on torch as the original.

    Shapes: heat (C, H, W), tags (C, H, W, E) → x, y (C, K) int64, val (C, K), tag (C, K, E)
    """
    c, h, w = heat.shape
    det = torch.from_numpy(heat)[None]
    det = det * (F.max_pool2d(det, 3, 1, 1) == det).float()
    val, ind = det.reshape(1, c, h * w).topk(top_k, dim=2)
    tag = torch.from_numpy(tags).reshape(1, c, h * w, -1)
    tag_k = torch.stack([tag[:, :, :, i].gather(2, ind) for i in range(tag.shape[3])], 3)
    return ((ind % w)[0].numpy(), (ind // w)[0].numpy(), val[0].numpy(), tag_k[0].numpy())


def ae2017_match(x: np.ndarray, y: np.ndarray, val: np.ndarray, tag: np.ndarray,
                 detection_threshold: float = 0.1, tag_threshold: float = 1.0,
                 max_people: int = 30) -> np.ndarray:
    """Group by tag, part by part in ``AE2017_ORDER``; instances are keyed by their first tag.

    Returns:
        (N, C, 3 + E): x, y, heat, tag per part (zeros when absent).
    """
    c, _, e = tag.shape
    people: dict[float, np.ndarray] = {}
    member_tags: dict[float, list[np.ndarray]] = {}
    for i, part in enumerate(AE2017_ORDER):
        joints = np.concatenate([x[part, :, None], y[part, :, None], val[part, :, None],
                                 tag[part]], 1).astype(np.float64)
        joints = joints[joints[:, 2] > detection_threshold]
        if i == 0 or not people:
            for joint in joints:
                people.setdefault(joint[3], np.zeros((c, 3 + e)))[part] = joint
                member_tags[joint[3]] = [joint[3:]]
            continue
        keys = list(people)[:max_people]
        # In the original's order: the mean tags first, then the skip ("ignore too much")
        # and the empty check, so a skipped part still costs its means.
        means = [np.mean(member_tags[k], axis=0) for k in keys]
        if len(keys) == max_people:  # "ignore too much": the part is skipped
            continue
        dist = np.sqrt(((joints[:, None, 3:] - np.array(means)[None]) ** 2).mean(2))
        if not len(joints):
            continue
        cost = np.round(dist) * 100 - joints[:, 2:3]
        if cost.shape[0] > cost.shape[1]:
            cost = np.concatenate([cost, np.full((cost.shape[0], cost.shape[0] - cost.shape[1]),
                                                 1e10)], 1)
        rows, cols = ASSIGN[0](cost)
        for r, col in zip(rows, cols, strict=True):
            if col < len(keys) and dist[r, col] < tag_threshold:
                people[keys[col]][part] = joints[r]
                member_tags[keys[col]].append(joints[r, 3:])
            else:
                key = joints[r, 3]
                people.setdefault(key, np.zeros((c, 3 + e)))[part] = joints[r]
                member_tags[key] = [joints[r, 3:]]
    if not people:
        return np.zeros((0, c, 3 + e))
    return np.array(list(people.values()))


def _quarter(h2d: np.ndarray, xi: int, yi: int) -> tuple[float, float]:
    """Pixel corner convention of the original: +0.5, then ±0.25 towards the higher
    neighbour (ties move down)."""
    hh, ww = h2d.shape
    dx = 0.25 if h2d[yi, min(xi + 1, ww - 1)] > h2d[yi, max(xi - 1, 0)] else -0.25
    dy = 0.25 if h2d[min(yi + 1, hh - 1), xi] > h2d[max(yi - 1, 0), xi] else -0.25
    return xi + 0.5 + dx, yi + 0.5 + dy


def ae2017_adjust(people: np.ndarray, heat: np.ndarray) -> None:
    """In place, one joint at a time as the original."""
    for n in range(people.shape[0]):
        for part in range(people.shape[1]):
            if people[n, part, 2] > 0:
                xi, yi = int(people[n, part, 0]), int(people[n, part, 1])
                people[n, part, :2] = _quarter(heat[part], xi, yi)


def ae2017_refine(heat: np.ndarray, tags: np.ndarray, kp: np.ndarray) -> np.ndarray:
    """One person: the argmax of ``heat − round(|tag − mean tag|)`` for every part (as the
    original, which computes it for all parts), filling the missing ones with score 1.

    Shapes: heat (C, H, W), tags (C, H, W, E), kp (C, 3) (modified and returned)
    """
    present = kp[:, 2] > 0
    xy = kp[present, :2].astype(np.int32)
    mean = tags[np.flatnonzero(present), xy[:, 1], xy[:, 0]].mean(0)
    found = []
    for part in range(heat.shape[0]):
        dist = np.sqrt(((tags[part] - mean[None, None]) ** 2).sum(2))
        yi, xi = np.unravel_index(np.argmax(heat[part] - np.round(dist)), heat[part].shape)
        found.append((*_quarter(heat[part], int(xi), int(yi)), heat[part, yi, xi]))
    found = np.array(found)
    fill = (found[:, 2] > 0) & ~present
    kp[fill, :2] = found[fill, :2]
    kp[fill, 2] = 1.0
    return kp


def ae2017_parse(heat: np.ndarray, tags: np.ndarray, refine: bool = True,
                 stages: dict[str, list[float]] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The whole reference decoder: (N, C, 3) keypoints (+0.5 pixel-corner coordinates) and
    scores (mean part heat, computed before the refinement, as the original). With ``stages``,
    appends each stage's thread CPU time (s) to its list.

    Shapes: heat (C, H, W), tags (C, H, W) or (C, H, W, E)
    """
    if tags.ndim == 3:
        tags = tags[..., None]
    t0 = time.thread_time()
    x, y, val, tag = ae2017_candidates(heat, tags)
    t1 = time.thread_time()
    people = ae2017_match(x, y, val, tag)
    t2 = time.thread_time()
    ae2017_adjust(people, heat)
    scores = people[:, :, 2].mean(1)
    kp = people[:, :, :3].copy()
    t3 = time.thread_time()
    if refine:
        for n in range(kp.shape[0]):
            ae2017_refine(heat, tags, kp[n])
    t4 = time.thread_time()
    if stages is not None:
        for name, dt in zip(("nms+topk", "match", "adjust+scores", "refine"),
                            (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages.setdefault(name, []).append(dt)
    return kp, scores


# --------------------------------------------------------------------------- quality


def quality(kp: np.ndarray, scores: np.ndarray, pos: np.ndarray, visible: np.ndarray,
            keep: int = PEOPLE) -> dict[str, float]:
    """Purity of the best ``keep`` decoded people (pixel-centre coordinates).

    Returns: people, purity (fraction whose parts all belong to one true person, a stray part
    counting as another person), parts per person, and coverage: for each true person, the
    largest number of its parts in one decoded person, summed, over the visible true parts.
    """
    order = np.argsort(-scores, kind="stable")[:keep]
    kp = kp[order]
    n, c = kp.shape[:2]
    if n == 0:
        return {"people": 0, "purity": float("nan"), "parts": 0.0, "coverage": 0.0}
    d = np.linalg.norm(kp[:, None, :, :2] - pos[None], axis=3)  # (n, true, C)
    d = np.where(visible[None], d, np.inf)
    owner = np.where(d.min(1) <= MATCH_RADIUS, d.argmin(1), -1)  # (n, C)
    present = kp[:, :, 2] > 0
    owner = np.where(present, owner, -2)
    pure = np.array([np.unique(o[o != -2]).size <= 1 and not (o == -1).any() for o in owner])
    counts = np.zeros((n, pos.shape[0]), np.int64)
    r, p = np.nonzero(owner >= 0)
    np.add.at(counts, (r, owner[r, p]), 1)
    return {"people": n, "purity": float(pure.mean()), "parts": float(present.sum(1).mean()),
            "coverage": float(counts.max(0).sum() / visible.sum())}


# --------------------------------------------------------------------------- main


def _aehg(heat: np.ndarray, tags: np.ndarray, refine: bool, method: str
          ) -> tuple[np.ndarray, np.ndarray]:
    out = group(heat, tags, refine=refine, method=method)
    return out.keypoints, out.scores


def _cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median thread CPU time of ``fn()`` in ms (one warm-up call)."""
    return median_ms(fn, repeats, clock=time.thread_time)


def aehg_stages(heat: np.ndarray, tags: np.ndarray, repeats: int, method: str
                ) -> dict[str, float]:
    """Median thread CPU time (ms) of aehg.group's stages, each timed alone through the
    public pieces group is made of (``group``'s defaults: 5×5 NMS, top 30, threshold 0.1):
    input checks, NMS + top-k, tag gather + sub-pixel positions, refinement
    (``refine_instances`` minus its own input check), and the rest of ``group`` without
    refinement: the matching, scores and ranking."""
    pk = find_peaks(heat, 5, 0.1, 30, per_channel=True)
    t4 = tags[:, None]
    out = group(heat, tags, refine=False, method=method)
    ms = {
        "checks": _cpu_ms(lambda: object_inputs(heat, tags), repeats),
        "nms+topk": _cpu_ms(lambda: find_peaks(heat, 5, 0.1, 30, per_channel=True),
                            repeats),
        "gather+subpixel": _cpu_ms(lambda: (gather(t4, pk.channel, pk.pixel),
                                            subpixel(heat, pk.channel, pk.pixel, True)),
                                   repeats),
        "group w/o refine": _cpu_ms(lambda: group(heat, tags, refine=False, method=method),
                                    repeats),
        "refine": _cpu_ms(lambda: refine_instances(out, heat, tags), repeats),
    }
    ms["refine"] -= ms["checks"]
    ms["match+scores"] = (ms.pop("group w/o refine") - ms["checks"] - ms["nms+topk"]
                          - ms["gather+subpixel"])
    return ms


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3, help="inputs (seeds 0…n-1)")
    ap.add_argument("--people", type=int, default=PEOPLE)
    ap.add_argument("--heat-noise", type=float, default=0.025)
    ap.add_argument("--tag-noise", type=float, default=0.15)
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile aehg.group (top 25)")
    ap.add_argument("--assignment", choices=["auto", "munkres", "scipy"], default="auto",
                    help="the reference's solver: munkres (the original's, pure Python), "
                         "scipy (faster than the original), auto: munkres when installed")
    ap.add_argument("--method", choices=["layout", "greedy"], default="layout",
                    help="aehg.group's matching: layout (the default) or greedy (the AE "
                         "code's algorithm)")
    args = ap.parse_args(argv)
    solver = args.assignment
    if solver == "auto":
        solver = "munkres" if Munkres is not None else "scipy"
    if solver == "munkres":
        if Munkres is None:
            raise SystemExit("--assignment munkres: the munkres package is not installed "
                             "(pip install munkres==1.1.4, the original's solver)")
        ASSIGN[0] = munkres_assignment
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # aehg's NMS dilates with OpenCV
    refine = not args.no_refine
    print(f"crowd: {args.people} people, maps {PARTS}x{SIZE}x{SIZE}, E = 1, sigma {SIGMA:g}, "
          f"heat noise {args.heat_noise:g}, tag noise {args.tag_noise:g} | refine {refine} | "
          f"threads {torch.get_num_threads()} torch, {cv2.getNumThreads()} OpenCV | "
          f"reference assignment: {solver} | aehg method: {args.method} | "
          f"median of {args.repeats} (interleaved)")
    print(f"{'seed':>4} {'decoder':>8} {'wall ms':>7} {'cpu ms':>7} {'people':>6} {'purity':>6} "
          f"{'parts':>5} {'cover':>5}")
    ratios, cpu_ratios = [], []
    for seed in range(args.seeds):
        heat, tags, pos, visible = crowd_input(args.people, seed, args.heat_noise,
                                               args.tag_noise)
        for _ in range(args.warmup):
            ae2017_parse(heat, tags, refine)
            _aehg(heat, tags, refine, args.method)
        # Wall time, and the thread's CPU time: on a shared machine the second is the one
        # that preemption does not inflate.
        t_ref, t_aehg, c_ref, c_aehg = [], [], [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            ae2017_parse(heat, tags, refine)
            t1, c1 = time.perf_counter(), time.thread_time()
            _aehg(heat, tags, refine, args.method)
            t2, c2 = time.perf_counter(), time.thread_time()
            t_ref.append(t1 - t0)
            t_aehg.append(t2 - t1)
            c_ref.append(c1 - c0)
            c_aehg.append(c2 - c1)
        ms_ref, ms_aehg = 1e3 * np.median(t_ref), 1e3 * np.median(t_aehg)
        cpu_ref, cpu_aehg = 1e3 * np.median(c_ref), 1e3 * np.median(c_aehg)
        kp, sc = ae2017_parse(heat, tags, refine)
        kp = kp.copy()
        kp[:, :, :2] -= 0.5  # pixel corners → centres
        q_ref = quality(kp, sc, pos, visible)
        q_aehg = quality(*_aehg(heat, tags, refine, args.method), pos, visible)
        for name, ms, cpu, q in (("ae2017", ms_ref, cpu_ref, q_ref),
                                 ("aehg", ms_aehg, cpu_aehg, q_aehg)):
            print(f"{seed:>4} {name:>8} {ms:>7.2f} {cpu:>7.2f} {q['people']:>6} "
                  f"{q['purity']:>6.3f} {q['parts']:>5.1f} {q['coverage']:>5.3f}")
        ratios.append(ms_ref / ms_aehg)
        cpu_ratios.append(cpu_ref / cpu_aehg)
        print(f"{seed:>4} {'ratio':>8} {ratios[-1]:>6.1f}x {cpu_ratios[-1]:>6.1f}x")
    print(f"median ratio over {args.seeds} inputs: wall {np.median(ratios):.1f}x, "
          f"cpu {np.median(cpu_ratios):.1f}x")
    heat, tags, _, _ = crowd_input(args.people, 0, args.heat_noise, args.tag_noise)
    stages: dict[str, list[float]] = {}
    n_stage = args.repeats
    for _ in range(n_stage):
        ae2017_parse(heat, tags, refine, stages)
    print(f"stages, thread CPU ms, median of {n_stage} (seed 0), each stage timed alone:")
    print("  ae2017: " + ", ".join(f"{k} {1e3 * np.median(v):.2f}" for k, v in stages.items()))
    if refine:
        ms = aehg_stages(heat, tags, n_stage, args.method)
        print("  aehg:   " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.repeats):
            _aehg(heat, tags, refine, args.method)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())


if __name__ == "__main__":
    main()
