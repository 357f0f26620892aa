"""Grouping part detections into instances: :func:`group` (associative embedding,
docs/design.md §4).

Two methods: ``"layout"`` (the default) matches by tag, detection confidence and the spatial
layout of a person (:class:`aehg.decoding.prior.PosePrior`), strong detections first, and merges
the pieces of a person that the part order split; ``"greedy"`` is the AE code's matching by tag
alone, one part at a time.

Example:
    >>> out = model(images)[-1].objects                      # heatmaps (B, 17, H, W)
    >>> people = aehg.group(out.heatmaps, out.tags)          # list of Instances, one per image
    >>> people[0].to_image(meta[0]["transform"]).keypoints   # (N, 17, 3) in image pixels
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from aehg.decoding.instances import Instances
from aehg.decoding.peaks import (
    SUBPIXEL_METHODS,
    WORKSPACE,
    Peaks,
    check_float,
    check_int,
    check_kernel,
    find_peaks,
    gather,
    object_inputs,
    subpixel,
    to_host,
)
from aehg.decoding.prior import PosePrior
from aehg.keypoints import COCO_PART_ORDER

__all__ = ["METHODS", "SPATIAL_GATE", "TIE_BREAK", "group", "refine_instances"]

METHODS = ("layout", "greedy")

# Scale (relative to ``tag_threshold``) of the score term of the greedy cost; see ``_assign``.
TIE_BREAK = 1e-9

# Layout matching (docs/design.md §4). S, the spatial cost of a candidate for an instance, is
# the mean (weighted by the parts' heats) of the squared z-scores of its log distances to the
# instance's parts: about 1 for a part where the prior expects it; a pair with
# S >= SPATIAL_GATE (3 deviations on average) cannot join.
SPATIAL_GATE = 9.0
# S of an instance whose scale is unknown (one part, and no other instance has a scale): what a
# right candidate costs on average, so that such an instance is neither preferred nor refused.
UNKNOWN_SPATIAL = 1.0
# An instance with a single part borrows the median scale of the image's other instances, with
# this deviation (log units: a factor e^0.6 ≈ 1.8 between people of one image).
BORROWED_SCALE_STD = 0.6
# Merge rounds (each merges the mutually best pairs of instances).
MERGE_ROUNDS = 4
# A step is clear when every candidate has exactly one instance within CLEAR_RATIO · τ and
# no other within τ, and vice versa: it joins without computing S (verify() checks later).
CLEAR_RATIO = 0.5


# --------------------------------------------------------------------------- matching


def _assign(dist: np.ndarray, tag_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Match candidates (columns, sorted by decreasing score) to instances (rows).

    A candidate either joins an instance at cost ``d`` (its tag distance to the instance's mean
    tag, only when ``d < tag_threshold``) or starts a new instance at cost ``tag_threshold``.
    The matching minimises the total cost, i.e. ``linear_sum_assignment`` on

        cost[m, k] = d[m, k] - tag_threshold - TIE_BREAK * tag_threshold * (K - k) / K
                         if d[m, k] < tag_threshold, else 0

    where 0 means "not matched". The last term only breaks ties of the distance sum (sums
    within ~1e-9·tag_threshold of each other): then the higher-scoring candidates join.

    It runs once per part on a few dozen rows and columns, so its time is numpy's per-call
    overhead: the fewest calls are on the dense (M, K) arrays rather than on lists of pairs.

    Shapes:
        dist: (M, K) float64

    Returns:
        (instance indices, candidate indices) of the accepted pairs.
    """
    ok = dist < tag_threshold
    n_ok = np.count_nonzero(ok)
    # More pairs than rows or columns is a conflict for sure (a crowd's usual case), without
    # the reductions that look for one.
    if (n_ok <= min(dist.shape) and n_ok == np.count_nonzero(np.logical_or.reduce(ok, 1))
            and n_ok == np.count_nonzero(np.logical_or.reduce(ok, 0))):
        # No conflict (one pair per row and per column): every pair is in the optimum.
        return ok.nonzero()
    cost = dist - tag_threshold
    cost -= _tie_break(dist.shape[1], tag_threshold)
    # Admissible entries are < 0 (d < τ exactly, and the bonus is > 0), the others 0. The
    # solver takes the whole matrix: rows and columns without an admissible pair add nothing
    # to any matching, and dropping them first costs more calls than they cost the solver.
    cost = np.where(ok, cost, 0.0)
    r, c = linear_sum_assignment(cost)
    keep = cost[r, c] < 0.0
    return r[keep], c[keep]


@functools.lru_cache(maxsize=64)
def _tie_break(k: int, tag_threshold: float) -> np.ndarray:
    """The score term of :func:`_assign`'s cost for K = k candidates (read-only; cached, as
    the same few K recur on every part).

    Shapes: → (k,) float64
    """
    bonus = (TIE_BREAK * tag_threshold / k) * np.arange(k, 0, -1)
    bonus.flags.writeable = False
    return bonus


def _match(peaks: Peaks, tags: np.ndarray, part_order: np.ndarray, num_parts: int,
           tag_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Group candidates into instances, one part at a time in ``part_order``.

    Per instance row, ``acc`` holds its tag sum and member count; the mean tags are computed
    from it once per part (one division instead of a gather-update-scatter per joined row).

    Returns:
        members (M, C) int64: candidate index per part, -1 when absent; and the instance mean
        tags (M, E) float64.
    """
    n, e = tags.shape
    bounds = np.searchsorted(peaks.channel, np.arange(num_parts + 1)).tolist()
    members = np.full((n, num_parts), -1, np.int64)
    init = np.concatenate([tags, np.ones((n, 1))], 1)  # a candidate's acc
    acc = np.zeros((n, e + 1))
    v0 = tags[:, 0]
    m = 0
    for part in part_order.tolist():
        s, t = bounds[part], bounds[part + 1]
        if s == t:
            continue
        col = members[:, part]
        new = None  # the candidates that start instances: all unless some join
        if m:
            if e == 1:
                mean = acc[:m, 0] / acc[:m, 1]
                dist = mean[:, None] - v0[s:t]
                np.abs(dist, out=dist)
            else:
                mean = acc[:m, :e] / acc[:m, e:]
                dist = np.sqrt(((mean[:, None, :] - tags[None, s:t]) ** 2).sum(-1))
            inst, k = _assign(dist, tag_threshold)
            if inst.size:
                k += s
                col[inst] = k
                # The instances are distinct, so the gather-add-scatter equals +=.
                acc[inst] = acc.take(inst, 0) + init.take(k, 0)
                if inst.size == t - s:
                    continue
                free = np.ones(t - s, bool)
                free[k - s] = False
                new = free.nonzero()[0] + s
        if new is None:
            new = np.arange(s, t)
        j = m + new.size
        col[m:j] = new
        acc[m:j] = init.take(new, 0)
        m = j
    return members[:m], acc[:m, :e] / acc[:m, e:]


def _median(x: np.ndarray) -> float:
    """np.median of a small 1-D array, without np.median's overhead (it runs per step)."""
    x = np.sort(x)
    k = x.size // 2
    return float(x[k]) if x.size % 2 else float(0.5 * (x[k - 1] + x[k]))


@dataclass(frozen=True)
class _Layout:
    """Parameters of the layout matching (see :func:`group`)."""

    tag_threshold: float
    spatial_weight: float
    confidence_weight: float
    strong_ratio: float
    hold_duplicates: bool
    merge_ratio: float
    mean: np.ndarray | None    # (C, C) prior mean of log distances; None: no spatial term
    var: np.ndarray | None     # (C, C) prior variance
    weight: np.ndarray | None  # (C, C) 1 / variance, 0 on the diagonal: the scale estimate
    test: np.ndarray | None = None    # (C, C) 1, 0 on the diagonal: the pairs of S
    mean32: np.ndarray | None = None  # the same four in float32
    var32: np.ndarray | None = None
    weight32: np.ndarray | None = None
    test32: np.ndarray | None = None


class _Groups:
    """Instances under construction (rows) for the layout matching of one image.

    Candidates: tags ``v (n, E)``, positions as complex numbers ``z = x + iy (n,)``, heats
    ``h (n,)``. Per row (at most n): its members (candidate index per part, -1 when absent);
    ``acc`` = tag sum (E), member count, heat sum; the positions ``pz`` and relative heats
    ``hp`` (heat / the image's highest) of its parts (0 when absent); and its log scale
    statistics ``lsum``, ``wsum``: over the pairs (q, r) of its parts, with weights
    w = hp_q · hp_r / σ²_qr, ``lsum = Σ w · (log d_qr − μ_qr)`` and ``wsum = Σ w``, so that
    ``lsum / wsum`` is its log scale and ``1 / wsum`` the variance of that estimate. Full steps
    update them as parts join; clear steps do not look at them and leave their rows ``dirty``,
    to be recomputed when needed (``maybe_dirty`` is False while no row is).

    A full step on a crowd is about a hundred numpy calls on arrays of a few hundred elements,
    so its time is the calls' overhead: the hot methods gather rows with ``take`` (half the
    time of fancy indexing on 2-D arrays), write one part's column through a 1-D view, and
    skip the dirty checks while nothing is dirty (docs/design.md §4, speed).
    """

    def __init__(self, v: np.ndarray, z: np.ndarray, h: np.ndarray, num_parts: int,
                 cfg: _Layout) -> None:
        n, e = v.shape
        self.v, self.z, self.h, self.cfg, self.e = v, z, h, cfg, e
        # Heats relative to the image's best weight the scale statistics (any heat range).
        self.hrel = h / h.max() if n else h
        self.v0 = v[:, 0]
        self.init = np.concatenate([v, np.ones((n, 1)), h[:, None]], 1)  # a candidate's acc
        self.members = np.full((n, num_parts), -1, np.int64)
        self.acc = np.zeros((n, e + 2))
        self.pz = np.zeros((n, num_parts), np.complex128)
        self.hp = np.zeros((n, num_parts))
        self.lsum = np.zeros(n)
        self.wsum = np.zeros(n)
        self.dirty = np.zeros(n, bool)
        self.maybe_dirty = False  # no row is dirty while False
        self.unchecked = np.zeros((n, num_parts), bool)  # joined without the spatial check
        self.when = np.zeros((n, num_parts), np.int64)  # the step at which a part came in
        self.t = 0
        self.m = 0
        self.inv_tau2 = 1.0 / cfg.tag_threshold ** 2
        # Without a prior there is no S to skip: every step takes the full path.
        self.clear_ok = cfg.mean is not None

    @property
    def means(self) -> np.ndarray:
        """Mean tags of the rows (M, E)."""
        acc = self.acc[:self.m]
        return acc[:, :self.e] / acc[:, self.e:self.e + 1]

    # ------------------------------------------------------------------ scales

    def _pair_terms(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row and pair of parts (q, r): log d_qr − μ_qr, the weight h_r of the pair
        in S and its weight W_qr · h_q · h_r in the scale (W = 1/σ²; 0 on the diagonal and for
        absent parts), in float32 (they feed a plausibility test; float32 halves the time of
        these C × C arrays).

        Shapes: rows (D,) → three (D, C, C)
        """
        cfg = self.cfg
        pz = self.pz[rows].astype(np.complex64)
        hp = self.hp[rows].astype(np.float32)
        ld = np.abs(pz[:, :, None] - pz[:, None, :])
        np.maximum(ld, 1.0, out=ld)  # distances below a pixel carry no information
        np.log(ld, out=ld)
        ld -= cfg.mean32
        w_r = cfg.test32 * hp[:, None, :]
        return ld, w_r, cfg.weight32 * hp[:, None, :] * hp[:, :, None]

    def refresh(self, rows: np.ndarray | None = None) -> None:
        """Recompute the scale statistics of the dirty rows among ``rows`` (None: all)."""
        if not self.maybe_dirty:
            return
        if rows is None:
            dirty = self.dirty[:self.m].nonzero()[0]
            self.maybe_dirty = False  # every row is clean after this
        else:
            dirty = rows[self.dirty[rows]]
        if dirty.size:
            self.refresh_terms(np.unique(dirty))

    def refresh_terms(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray, np.ndarray]:
        """:meth:`_pair_terms` of ``rows`` plus, per part q, Σ_r w_qr (log d_qr − μ_qr) and
        Σ_r w_qr; stores the rows' scale statistics (each pair appears twice in the sums)."""
        ld, w_r, w = self._pair_terms(rows)
        wl = (w * ld).sum(2)
        wq = w.sum(2)
        self.lsum[rows] = 0.5 * wl.sum(1)
        self.wsum[rows] = 0.5 * wq.sum(1)
        self.dirty[rows] = False
        return ld, w_r, w, wl, wq

    def _scales(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Log scale, its variance, and whether any is known, per row: its own (>= 2 parts),
        else the median of the image's rows that have one (variance BORROWED_SCALE_STD²)."""
        if self.maybe_dirty:
            self.refresh(rows)
        wsum = self.wsum[rows]
        if wsum.min() > 0:  # the usual case: every row has a scale of its own
            return self.lsum[rows] / wsum, 1.0 / wsum, True
        own = wsum > 0
        self.refresh()
        known = self.wsum[:self.m] > 0
        if not known.any():
            return np.zeros(rows.size), np.ones(rows.size), False
        borrowed = _median(self.lsum[:self.m][known] / self.wsum[:self.m][known])
        safe = np.where(own, wsum, 1.0)
        return (np.where(own, self.lsum[rows] / safe, borrowed),
                np.where(own, 1.0 / safe, BORROWED_SCALE_STD ** 2), True)

    def spatial(self, part: int, rows: np.ndarray, cand: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """S of each (row, candidate) pair for ``part``: the mean of the squared z-scores of
        the candidate's log distances to the row's parts, weighted by the parts' heats. S is
        ``UNKNOWN_SPATIAL`` when no row of the image has a scale. Also returns log distance −
        prior mean per pair and part, for :meth:`join`.

        Shapes: rows, cand: (P,) → S (P,), log distances − μ (P, C)
        """
        cfg = self.cfg
        ld = np.abs(self.pz.take(rows, 0) - self.z[cand][:, None])
        np.maximum(ld, 1.0, out=ld)  # distances below a pixel carry no information
        np.log(ld, out=ld)
        ld -= cfg.mean[part]
        # _scales' usual case inline: every row clean, with a scale of its own.
        wsum = None if self.maybe_dirty else self.wsum[rows]
        if wsum is not None and np.minimum.reduce(wsum) > 0:
            scale, var = self.lsum[rows] / wsum, 1.0 / wsum
        else:
            scale, var, known = self._scales(rows)
            if not known:
                return np.full(rows.size, UNKNOWN_SPATIAL), ld
        z = ld - scale[:, None]
        z *= z
        z /= cfg.var[part] + var[:, None]
        w = self.hp.take(rows, 0)
        w[:, part] = 0.0  # = w · test[part]: heats are >= 0, test is 1 off the diagonal
        z *= w
        wtot = np.add.reduce(w, 1)
        if np.minimum.reduce(wtot) > 0:
            return np.add.reduce(z, 1) / wtot, ld
        out = np.full(rows.size, UNKNOWN_SPATIAL)
        return np.divide(np.add.reduce(z, 1), wtot, out=out, where=wtot > 0), ld

    # ------------------------------------------------------------------ updates

    def add(self, part: int, cand: np.ndarray) -> None:
        """Each candidate of ``part`` starts a row of its own."""
        s, t = self.m, self.m + cand.size
        if s == t:
            return
        self.members[s:t, part] = cand
        self.when[s:t, part] = self.t
        self.acc[s:t] = self.init.take(cand, 0)
        self.pz[s:t, part] = self.z[cand]
        self.hp[s:t, part] = self.hrel[cand]
        self.m = t

    def join(self, part: int, rows: np.ndarray, cand: np.ndarray,
             ld: np.ndarray | None = None) -> None:
        """Candidates of ``part`` join rows (distinct, lacking the part). With ``ld`` (log
        distances − μ to the rows' parts, from :meth:`spatial`) the scale statistics of clean
        rows are updated in place; otherwise the rows become dirty."""
        hrel = self.hrel[cand]
        if ld is None:
            self.dirty[rows] = True
            self.maybe_dirty = True
        else:
            rows_c, hrel_c = rows, hrel  # the usual case: no indexing to do
            if self.maybe_dirty:
                dirty = self.dirty[rows]
                if dirty.any():
                    clean = ~dirty
                    rows_c, hrel_c, ld = rows[clean], hrel[clean], ld[clean]
            w = self.hp.take(rows_c, 0) * self.cfg.weight[part]
            w *= hrel_c[:, None]
            self.wsum[rows_c] += np.add.reduce(w, 1)
            w *= ld
            self.lsum[rows_c] += np.add.reduce(w, 1)
        # The rows are distinct, so the gather-add-scatter equals +=.
        self.acc[rows] = self.acc.take(rows, 0) + self.init.take(cand, 0)
        self.members[:, part][rows] = cand
        self.when[:, part][rows] = self.t
        self.pz[:, part][rows] = self.z[cand]
        self.hp[:, part][rows] = hrel

    # ------------------------------------------------------------------ matching

    def step(self, part: int, cand: np.ndarray, first_row: int, hold: bool,
             clear: bool = True) -> np.ndarray:
        """Match the candidates ``cand`` of ``part`` to the rows >= ``first_row``.

        A pair is plausible when its tag distance d < τ and (with a prior) S < SPATIAL_GATE, and
        admissible when the row also lacks the part and its cost
        ``(d / τ)² + spatial_weight · S + confidence_weight · (1 − h · c̄)`` (h the candidate's
        heat, c̄ the row's mean part heat) is < 1, the cost of a new instance. Admissible pairs
        that conflict (a candidate with several rows or a row with several candidates) are
        assigned by ``linear_sum_assignment``. A candidate left over starts a row, or, with
        ``hold``, is returned (held back) when it has a plausible row it could not join
        (typically another detection of a part that instance already has).

        A clear step (each candidate has one row within τ and it is within CLEAR_RATIO · τ, no
        row has two candidates, every row lacks the part) joins without computing S; the
        members it adds are tested by :meth:`verify`.

        Returns:
            The held candidates.
        """
        cfg = self.cfg
        m = self.m
        self.t += 1
        if m <= first_row:
            self.add(part, cand)
            return cand[:0]
        acc = self.acc[first_row:m]
        e = self.e
        if e == 1:
            dist = np.abs(acc[:, 0:1] / acc[:, 1:2] - self.v0[cand])
        else:
            mean = acc[:, :e] / acc[:, e:e + 1]
            dist = np.sqrt(((mean[:, None, :] - self.v[cand][None]) ** 2).sum(-1))
        ri, ki = (dist < cfg.tag_threshold).nonzero()
        if not ri.size:
            self.add(part, cand)
            return cand[:0]
        rows = ri + first_row if first_row else ri
        ck = cand[ki]
        cost = dist[ri, ki]
        cost *= cost
        cost *= self.inv_tau2
        if (clear and self.clear_ok and np.maximum.reduce(cost) < CLEAR_RATIO ** 2
                and not (ri[1:] == ri[:-1]).any() and np.bincount(ki).max() == 1
                and (self.members[:, part][rows] < 0).all()):
            # Clear: nothing to choose. verify() applies S, the gate and the cost afterwards.
            self.join(part, rows, ck)
            self.unchecked[:, part][rows] = True
            if ki.size < cand.size:
                rest = np.ones(cand.size, bool)
                rest[ki] = False
                self.add(part, cand[rest])  # no instance near their tags: nothing to hold
            return cand[:0]
        ok = self.members[:, part][rows] < 0
        plausible = ld = None
        if cfg.mean is not None:
            s, ld = self.spatial(part, rows, ck)
            plausible = s < SPATIAL_GATE
            ok &= plausible
            s *= cfg.spatial_weight
            cost += s
        if cfg.confidence_weight:
            # The rows' mean heat, per row once rather than per pair.
            conf = (acc[:, e + 1] / acc[:, e])[ri]
            conf *= self.h[ck]
            conf -= 1.0
            conf *= cfg.confidence_weight
            cost -= conf
        ok &= cost < 1.0
        sel = ok.nonzero()[0]
        if sel.size:
            r, k = ri[sel], ki[sel]
            # nonzero lists the pairs by row, so a repeated row is next to itself.
            new_r = np.empty(r.size, bool)
            new_r[0] = True
            np.not_equal(r[1:], r[:-1], out=new_r[1:])
            counts = np.bincount(k, minlength=cand.size)
            if not new_r.all() or counts.max() > 1:
                # The conflicting block: the rows and candidates with an admissible pair
                # (every entry cost − 1 < 0 is nonzero), as consecutive indices.
                rank_r = new_r.cumsum() - 1
                cum_k = (counts > 0).cumsum()
                rank_k = cum_k[k] - 1
                shape = (int(rank_r[-1]) + 1, int(cum_k[-1]))
                sub = np.zeros(shape)
                sub[rank_r, rank_k] = cost[sel] - 1.0  # < 0: joining beats a new instance
                a_, b_ = linear_sum_assignment(sub)
                # The assigned entries that are pairs are the negative ones, those kept.
                pair = np.empty(shape, np.int64)
                pair.fill(-1)
                pair[rank_r, rank_k] = sel
                sel = pair[a_, b_]
                sel = sel[sel >= 0]
            self.join(part, rows[sel], ck[sel], None if ld is None else ld[sel])
            if sel.size == cand.size:
                return cand[:0]
        # 0: starts a row; 1: held (a plausible row it could not join); 2: joined.
        fate = np.zeros(cand.size, np.int8)
        if hold:
            fate[ki if plausible is None else ki[plausible]] = 1
        fate[ki[sel]] = 2
        self.add(part, cand[fate == 0])
        return cand[fate == 1] if hold else cand[:0]

    def verify(self, part_order: list[int]) -> None:
        """The test of the clear joins, as the step would have made it: each such member,
        against the parts its row had before it came in, must be plausible (S with the scale
        of those parts < SPATIAL_GATE) and cost < 1 (tag distance to their mean tag, their
        mean heat). Where one fails, it and every part that came into its row after it leave
        the row and are matched again, part by part in ``part_order``, by full steps (S
        computed, no clear joins): the failed member may now start the row that the later
        ones belong to."""
        rows = self.unchecked[:self.m].any(1).nonzero()[0]
        if not rows.size:
            return
        s, cost = self._on_arrival(rows)
        bad = self.unchecked[rows] & ((s >= SPATIAL_GATE) | (cost >= 1.0))
        self.unchecked[:self.m] = False
        out = bad.any(1)
        if not out.any():
            return
        rows, bad = rows[out], bad[out]
        when = self.when[rows]
        first_bad = np.where(bad, when, np.iinfo(np.int64).max).min(1)
        leave = (self.members[rows] >= 0) & (when >= first_bad[:, None])
        r, parts = leave.nonzero()
        r = rows[r]
        cand = self.members[r, parts]
        np.subtract.at(self.acc, r, self.init[cand])
        self.members[r, parts] = -1
        self.pz[r, parts] = 0
        self.hp[r, parts] = 0
        self.dirty[rows] = True
        self.maybe_dirty = True
        for part in part_order:
            mine = cand[parts == part]
            if mine.size:
                self.step(part, np.sort(mine), 0, False, clear=False)

    def _on_arrival(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """S and cost of each part of each row against the parts that came in before it: S
        with the scale of those parts (or the image's median scale; ``UNKNOWN_SPATIAL`` when
        there is none), the cost with their mean tag and mean heat (as :meth:`step`).

        Shapes: rows (D,) → S (D, C), cost (D, C)
        """
        cfg = self.cfg
        e = self.e
        ld, w_r, w, _, _ = self.refresh_terms(rows)
        members = self.members[rows]
        present = members >= 0
        when = np.where(present, self.when[rows], np.iinfo(np.int64).max)
        before = (when[:, None, :] < when[:, :, None]).astype(np.float32)  # r before q
        w_b = w * before
        idx = np.where(present, members, 0)
        v = self.v[idx] * present[..., None]
        h = self.h[idx] * present
        # Per part q, over the parts r before it (one batched product): the scale statistics
        # of the pairs complete when r came in (so, summed, of all pairs before q), the tag
        # sum, the heat sum and the count.
        cols = np.concatenate([(w_b * ld).sum(2, keepdims=True), w_b.sum(2, keepdims=True), v,
                               h[..., None], present[..., None]], 2)
        agg = before @ cols
        lsum, wsum, count = agg[..., 0], agg[..., 1], np.maximum(agg[..., e + 3], 1.0)
        own = wsum > 0
        scale = np.zeros(own.shape, np.float32)
        var = np.full(own.shape, BORROWED_SCALE_STD ** 2, np.float32)
        scale[own] = lsum[own] / wsum[own]
        var[own] = 1.0 / wsum[own]
        unknown = ~own
        if unknown.any():
            self.refresh()
            known = self.wsum[:self.m] > 0
            if known.any():
                scale[unknown] = _median(self.lsum[:self.m][known] / self.wsum[:self.m][known])
                unknown[:] = False
        ld -= scale[:, :, None]
        ld *= ld
        ld /= cfg.var32 + var[:, :, None]
        w_r *= before
        ld *= w_r
        wtot = w_r.sum(2)
        s = np.divide(ld.sum(2), wtot, out=np.full(wtot.shape, UNKNOWN_SPATIAL, np.float32),
                      where=wtot > 0)
        s[unknown] = UNKNOWN_SPATIAL
        d2 = ((v - agg[..., 2:2 + e] / count[..., None]) ** 2).sum(-1)
        conf = agg[..., e + 2] / count * h
        cost = d2 * self.inv_tau2 + cfg.spatial_weight * s + cfg.confidence_weight * (1 - conf)
        return s, cost

    def merge(self) -> None:
        """Merge rows with disjoint parts whose mean tags are closer than ``merge_ratio · τ``
        and whose union is plausible (S < SPATIAL_GATE over the cross pairs). Cost
        ``(d / τ)² + spatial_weight · S``; each round merges the pairs that are each other's
        cheapest partner."""
        cfg = self.cfg
        tau = cfg.tag_threshold
        for _ in range(MERGE_ROUNDS):
            m = self.m
            if m < 2:
                return
            present = (self.members[:m] >= 0).astype(np.float32)
            disjoint = (present @ present.T) == 0
            mean = self.means
            if self.e == 1:
                dist = np.abs(mean[:, 0, None] - mean[None, :, 0])
            else:
                dist = np.sqrt(((mean[:, None, :] - mean[None]) ** 2).sum(-1))
            a, b = np.triu(disjoint & (dist < cfg.merge_ratio * tau), 1).nonzero()
            if not a.size:
                return
            cost = (dist[a, b] / tau) ** 2
            if cfg.mean is not None:
                self.refresh(np.concatenate([a, b]))
                # The cross pairs (q of row a, r of row b), listed: rows are often single
                # parts, so a dense (pairs, C, C) array would be mostly empty.
                pi, q, r = (self.hp[a][:, :, None] * self.hp[b][:, None, :] > 0).nonzero()
                ra, rb = a[pi], b[pi]
                ld = np.abs(self.pz[ra, q] - self.pz[rb, r])
                np.maximum(ld, 1.0, out=ld)
                np.log(ld, out=ld)
                ld -= cfg.mean[q, r]
                hh = self.hp[ra, q] * self.hp[rb, r]
                w = cfg.weight[q, r] * hh
                # The cross pairs are tested against the two rows' own scale (they must not
                # vote for the scale they are tested against).
                own_l, own_w = self.lsum[a] + self.lsum[b], self.wsum[a] + self.wsum[b]
                known = own_w > 0
                scale = np.zeros(a.size)
                var = np.full(a.size, BORROWED_SCALE_STD ** 2)
                scale[known] = own_l[known] / own_w[known]
                var[known] = 1.0 / own_w[known]
                unknown = ~known
                if unknown.any():
                    rows_known = self.wsum[:m] > 0
                    if rows_known.any():
                        scale[unknown] = _median(self.lsum[:m][rows_known]
                                                 / self.wsum[:m][rows_known])
                        unknown[:] = False
                z2 = (ld - scale[pi]) ** 2 / (cfg.var[q, r] + var[pi])
                n = a.size
                s = np.bincount(pi, hh * z2, n) / np.bincount(pi, hh, n)  # every pair has one
                s[unknown] = UNKNOWN_SPATIAL
                lsum = own_l + np.bincount(pi, w * ld, n)
                wsum = own_w + np.bincount(pi, w, n)
                ok = s < SPATIAL_GATE
                a, b, cost = a[ok], b[ok], (cost + cfg.spatial_weight * s)[ok]
                lsum, wsum = lsum[ok], wsum[ok]
                if not a.size:
                    return
            full = np.full((m, m), np.inf)
            full[a, b] = cost
            full[b, a] = cost
            best = full.argmin(1)
            mutual = (best[a] == b) & (best[b] == a)
            if not mutual.any():
                return
            a, b = a[mutual], b[mutual]
            has_b = self.members[b] >= 0
            self.members[a] = np.where(has_b, self.members[b], self.members[a])
            self.pz[a] = np.where(has_b, self.pz[b], self.pz[a])
            self.hp[a] = np.where(has_b, self.hp[b], self.hp[a])
            self.when[a] = np.where(has_b, self.when[b], self.when[a])
            self.acc[a] += self.acc[b]
            if cfg.mean is not None:
                self.lsum[a], self.wsum[a] = lsum[mutual], wsum[mutual]
            keep = np.ones(m, bool)
            keep[b] = False
            k = int(keep.sum())
            for arr in (self.members, self.acc, self.pz, self.hp, self.lsum, self.wsum,
                        self.dirty, self.when, self.unchecked):
                arr[:k] = arr[:m][keep]
            self.m = k


def _match_layout(peaks: Peaks, tags: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                  part_order: np.ndarray, num_parts: int, cfg: _Layout
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The layout matching of docs/design.md §4.

    1. The strong candidates (heat >= ``strong_ratio`` × the image's highest heat), one part
       at a time in ``part_order``, then the weak ones the same way (:meth:`_Groups.step`).
    2. The held-back duplicates are grouped among themselves the same way.
    3. The spatial check of the clear joins (:meth:`_Groups.verify`).
    4. Merge rounds (:meth:`_Groups.merge`).

    Returns:
        members (M, C) int64: candidate index per part, -1 when absent; and the instance mean
        tags (M, E) float64.
    """
    h = peaks.score.astype(np.float64)
    z = xs.astype(np.float64) + 1j * ys.astype(np.float64)
    groups = _Groups(tags, z, h, num_parts, cfg)
    if not h.size:
        return groups.members[:0], groups.means
    order = part_order.tolist()
    channel = peaks.channel
    bounds = np.searchsorted(channel, np.arange(num_parts + 1)).tolist()
    # Candidates of a part are sorted by decreasing heat: the strong ones are a prefix.
    strong = h >= cfg.strong_ratio * h.max()
    cum = np.concatenate([[0], np.cumsum(strong)]).tolist()
    split = [bounds[c] + cum[bounds[c + 1]] - cum[bounds[c]] for c in range(num_parts)]
    held = []
    for lo, hi in ((bounds[:-1], split), (split, bounds[1:])):
        for part in order:
            if hi[part] > lo[part]:
                held.append(groups.step(part, np.arange(lo[part], hi[part]), 0,
                                        cfg.hold_duplicates))
    pool = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    if pool.size:
        first = groups.m
        pb = np.searchsorted(channel[pool], np.arange(num_parts + 1)).tolist()
        for part in order:
            if pb[part + 1] > pb[part]:
                groups.step(part, pool[pb[part]:pb[part + 1]], first, False)
    if cfg.mean is not None:
        groups.verify(order)
    if cfg.merge_ratio > 0:
        groups.merge()
    return groups.members[:groups.m], groups.means


_REFINE_CHUNK = 1 << 20  # pixels × instances per refinement pass


def _refine(keypoints: np.ndarray, means: np.ndarray, heat: np.ndarray, tags: np.ndarray,
            adjust: bool, subpixel_method: str = "quarter") -> None:
    """Fill missing parts in place: argmax over pixels of ``heat - rint(|tag - mean tag|)``.

    ``rint`` rounds half to even (``np.round``, as in the AE code); distances are computed in
    float32; the first pixel wins ties; a part is filled only when the heat at the chosen pixel
    is > 0. Vectorised over the instances missing a part (one pass set per part).

    Shapes:
        keypoints: (N, C, 3), means: (N, E), heat: (C, H, W), tags: (C_t, E, H, W)
    """
    c, h, w = heat.shape
    e = tags.shape[1]
    part, who = np.nonzero(keypoints[:, :, 2].T == 0)  # by part, then instance
    if not part.size:
        return
    mean32 = means.astype(np.float32)
    flat_heat = heat.reshape(c, h * w)
    flat_tags = tags.reshape(tags.shape[0], e, h * w)
    best = np.empty(part.size, np.int64)
    bounds = np.searchsorted(part, np.arange(c + 1)).tolist()
    rows = max(1, _REFINE_CHUNK // (h * w))  # instances per pass: bounded scratch memory
    # Tags near the float32 limit overflow to an infinite distance: right, such a pixel is as
    # far as can be, so the overflow is not worth a warning (one errstate for all passes: it
    # costs a few microseconds each time).
    with np.errstate(over="ignore"):
        for p in [q for q in range(c) if bounds[q + 1] > bounds[q]]:
            t = flat_tags[p if flat_tags.shape[0] == c else 0]
            for i in range(bounds[p], bounds[p + 1], rows):
                j = min(i + rows, bounds[p + 1])
                m = mean32[who[i:j]]
                size = (j - i) * h * w
                buf = WORKSPACE.get("refine0", size).reshape(j - i, h * w)
                np.subtract(t[0], m[:, 0:1], out=buf)
                if e == 1:
                    np.abs(buf, out=buf)
                else:
                    np.square(buf, out=buf)
                    diff = WORKSPACE.get("refine1", size).reshape(j - i, h * w)
                    for k in range(1, e):  # a handful of embedding dimensions
                        np.subtract(t[k], m[:, k:k + 1], out=diff)
                        np.square(diff, out=diff)
                        buf += diff
                    np.sqrt(buf, out=buf)
                np.rint(buf, out=buf)
                np.subtract(flat_heat[p], buf, out=buf)
                best[i:j] = buf.argmax(1)
    val = flat_heat[part, best]
    fill = val > 0
    who, part, best, val = who[fill], part[fill], best[fill], val[fill]
    xs, ys = subpixel(heat, part, best, adjust, subpixel_method)
    keypoints[who, part] = np.stack([xs, ys, val], 1)


# --------------------------------------------------------------------------- public API


def refine_instances(instances: Instances, heatmaps: np.ndarray | torch.Tensor,
                     tags: np.ndarray | torch.Tensor, *, adjust: bool = True,
                     subpixel_method: str = "quarter") -> Instances:
    """Step 6 of :func:`group` on given instances: each missing part becomes the argmax over
    pixels of ``heat - rint(|tag - instance tag|)``, filled when the heat there is > 0.

    For instances grouped some other way, e.g. the ground-truth grouping of
    ``benchmarks/bench_oracle.py``'s ceiling, with ``instances.tags`` as the reference tags.
    Present parts, scores and tags are copied unchanged.

    Args:
        instances: instances of one image in heatmap pixels.
        heatmaps: its part heatmaps.
        tags: its tags (C_t = C or 1).
        adjust: sub-pixel adjustment of the filled positions.
        subpixel_method: "quarter" or "quadratic" (:func:`aehg.decoding.peaks.subpixel`).

    Shapes:
        heatmaps: (C, H, W), tags: (C_t, H, W) or (C_t, E, H, W); instances: C parts, E dims

    Raises:
        ValueError: shapes that do not fit together (naming the argument).
    """
    batched, heats, tag_maps, (c, _, _) = object_inputs(heatmaps, tags)
    if batched:
        raise ValueError(f"heatmaps: expected one image (C, H, W), got {tuple(np.shape(heatmaps))}")
    if instances.num_parts != c or instances.embedding_dim != tag_maps[0].shape[1]:
        raise ValueError(f"instances: expected C = {c} parts and E = {tag_maps[0].shape[1]} "
                         f"tag dims like the maps, got {instances.num_parts} and "
                         f"{instances.embedding_dim}")
    kp = instances.keypoints.copy()
    if len(kp) and (kp[:, :, 2] == 0).any():
        _refine(kp, instances.tags.astype(np.float64), to_host(heats[0]), to_host(tag_maps[0]),
                adjust, subpixel_method)
    return Instances(kp, instances.scores.copy(), instances.tags.copy())


def group(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor, *,
          nms_kernel: int = 5, top_k: int = 30, detection_threshold: float = 0.1,
          tag_threshold: float = 1.0, max_instances: int | None = 30,
          part_order: tuple[int, ...] | list[int] | None = None, adjust: bool = True,
          refine: bool = True, method: str = "layout", pose_prior: PosePrior | str = "auto",
          spatial_weight: float = 0.1, confidence_weight: float = 0.5,
          strong_ratio: float = 0.5, hold_duplicates: bool = True, merge_ratio: float = 0.8,
          subpixel_method: str = "quarter") -> Instances | list[Instances]:
    """Group part detections into instances (docs/design.md §4).

    1. Candidates: pixels equal to the max of their ``nms_kernel`` window with a heat >
       ``detection_threshold``, the best ``top_k`` per part (ties: lower pixel index first).
    2. Matching, by ``method``:

       * ``"layout"`` (default): the strong candidates (heat >= ``strong_ratio`` × the
         image's highest heat) are matched first, one part at a time in ``part_order``, then
         the weak ones. A candidate joins an instance when its tag distance d < τ
         (``tag_threshold``), it is plausible where it lies (the spatial cost S of the
         ``pose_prior`` is < ``SPATIAL_GATE``) and
         ``(d / τ)² + spatial_weight · S + confidence_weight · (1 − heat · instance mean
         heat) < 1``; conflicts are solved by ``linear_sum_assignment`` on that cost. A
         candidate left over that has a plausible instance it could not join (typically a
         duplicate of a part that instance has) is held back (``hold_duplicates``), and the
         held-back candidates are grouped among themselves at the end, so that they never
         seed instances that compete for the real parts. Steps with nothing to choose join
         without computing S and are tested afterwards (docs/design.md §4, clear steps).
         Last, instances with disjoint parts, mean tags closer than ``merge_ratio · τ`` and a
         plausible union are merged (a person split by the part order).
       * ``"greedy"``: the AE code's matching: parts in ``part_order``, the first part's
         candidates seed instances, each later part is matched to the instances' mean tags
         with ``linear_sum_assignment`` on ``d − τ`` for ``d < τ``; a new instance costs τ;
         the detection score (through its rank) only breaks exact ties. The layout options
         are ignored.

       The number of instances is not capped during matching.
    3. Coordinates move a quarter pixel towards the higher neighbour (``adjust``; with
       ``subpixel_method="quadratic"`` to the vertex of the log-heat parabola per axis).
    4. Instance score = mean over the C parts of the grouped part scores (absent = 0); the best
       ``max_instances`` are kept, sorted by decreasing score (ties: creation order).
    5. ``refine``: each missing part of a kept instance becomes the argmax over pixels of
       ``heat - rint(|tag - mean tag|)`` (``np.rint``: halves round to even, as the AE
       code's ``np.round``), filled only when the heat there is > 0. Present parts never
       change, and neither do scores and tags.

    Args:
        heatmaps: part heatmaps (activated).
        tags: per-part tags (or one tag map shared by all parts, C_t = 1).
        nms_kernel: odd NMS window size.
        top_k: candidates per part.
        detection_threshold: minimum heat (>= 0) of a candidate.
        tag_threshold: maximum tag distance (exclusive) for joining an instance.
        max_instances: instances kept per image (None: all).
        part_order: permutation of 0…C-1; default COCO order for C = 17, else 0…C-1.
        adjust: sub-pixel adjustment.
        refine: fill missing parts.
        subpixel_method: "quarter" (the AE code's) or "quadratic"
            (:func:`aehg.decoding.peaks.subpixel`).
        method: "layout" or "greedy".
        pose_prior: the spatial layout of a person: a :class:`PosePrior` with C parts,
            "coco" (:meth:`PosePrior.coco`), "flat" (:meth:`PosePrior.flat`), or "auto":
            COCO's for C = 17, else flat.
        spatial_weight: weight (>= 0) of the spatial cost S; 0 switches the layout off (no
            spatial cost, no plausibility gate, merges by tag alone).
        confidence_weight: weight (>= 0) of the confidence term; 0 switches it off.
        strong_ratio: fraction (0…1) of the image's highest heat above which a candidate is
            strong; 0 puts every candidate in one tier.
        hold_duplicates: hold back candidates that have a plausible instance they could not
            join (duplicates of parts instances already have).
        merge_ratio: merge instances whose mean tags are closer than ``merge_ratio ·
            tag_threshold`` (>= 0; 0 switches merging off).

    Shapes:
        heatmaps: (C, H, W) or (B, C, H, W)
        tags: (C_t, H, W) or (C_t, E, H, W); batched (B, C_t, H, W) or (B, C_t, E, H, W)
        keypoints: (N, C, 3), scores: (N,), tags: (N, E) in each returned Instances

    Returns:
        An Instances, or a list of them (one per image) for batched input.

    Raises:
        ValueError: wrong rank or shapes, NaN/infinite values, invalid parameters.
    """
    nms_kernel = check_kernel(nms_kernel)
    top_k = check_int(top_k, "top_k", 1)
    detection_threshold = check_float(detection_threshold, "detection_threshold", 0.0)
    tag_threshold = check_float(tag_threshold, "tag_threshold", positive=True)
    if max_instances is not None:
        max_instances = check_int(max_instances, "max_instances", 0)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")
    if subpixel_method not in SUBPIXEL_METHODS:
        raise ValueError(f"subpixel_method: expected one of {list(SUBPIXEL_METHODS)}, "
                         f"got {subpixel_method!r}")
    batched, heats, tag_maps, (c, _, _) = object_inputs(heatmaps, tags)
    order = _part_order(part_order, c)
    layout = None
    if method == "layout":
        layout = _layout_params(c, tag_threshold, pose_prior, spatial_weight,
                                confidence_weight, strong_ratio, hold_duplicates, merge_ratio)
    out = []
    for heat, tag in zip(heats, tag_maps, strict=True):
        peaks = find_peaks(heat, nms_kernel, detection_threshold, top_k, per_channel=True)
        cand_tags = gather(tag, peaks.channel if tag.shape[0] == c else
                            np.zeros_like(peaks.channel), peaks.pixel)
        xs, ys = subpixel(heat, peaks.channel, peaks.pixel, adjust, subpixel_method)
        if layout is None:
            members, means = _match(peaks, cand_tags, order, c, tag_threshold)
        else:
            members, means = _match_layout(peaks, cand_tags, xs, ys, order, c, layout)
        # (x, y, score) per candidate and a row of zeros last, where absent parts (-1) point.
        table = np.zeros((xs.size + 1, 3), np.float32)
        table[:-1, 0], table[:-1, 1], table[:-1, 2] = xs, ys, peaks.score
        kp = table.take(members, 0)
        scores = kp[:, :, 2].sum(1, dtype=np.float64) / c  # np.mean's value, without its wrapper
        keep = np.argsort(-scores, kind="stable")[:max_instances]
        kp, scores, means = kp[keep], scores[keep], means[keep]
        if refine and kp.shape[0] and (kp[:, :, 2] == 0).any():
            _refine(kp, means, to_host(heat), to_host(tag), adjust, subpixel_method)
        out.append(Instances(kp, scores, means))
    return out if batched else out[0]


def _layout_params(c: int, tag_threshold: float, pose_prior: Any, spatial_weight: Any,
                   confidence_weight: Any, strong_ratio: Any, hold_duplicates: Any,
                   merge_ratio: Any) -> _Layout:
    """Checked parameters of the layout matching (errors name the argument)."""
    spatial_weight = check_float(spatial_weight, "spatial_weight", 0.0)
    confidence_weight = check_float(confidence_weight, "confidence_weight", 0.0)
    strong_ratio = check_float(strong_ratio, "strong_ratio", 0.0)
    if strong_ratio > 1:
        raise ValueError(f"strong_ratio: expected a number in [0, 1], got {strong_ratio!r}")
    if not isinstance(hold_duplicates, (bool, np.bool_)):
        raise ValueError(f"hold_duplicates: expected a bool, got {hold_duplicates!r}")
    merge_ratio = check_float(merge_ratio, "merge_ratio", 0.0)
    mean = var = weight = None
    if spatial_weight > 0:
        prior = _pose_prior(pose_prior, c)
        mean = np.asarray(prior.mean)
        var = prior.std ** 2
        weight = 1.0 / var
        np.fill_diagonal(weight, 0.0)  # a part says nothing about its own position
    test = None
    if weight is not None:
        test = 1.0 - np.eye(c)  # every other part counts once in S
    f32 = (None,) * 4 if mean is None else tuple(x.astype(np.float32)
                                                for x in (mean, var, weight, test))
    return _Layout(tag_threshold, spatial_weight, confidence_weight, strong_ratio,
                   bool(hold_duplicates), merge_ratio, mean, var, weight, test, *f32)


_PRIORS: dict[Any, PosePrior] = {}


def _pose_prior(pose_prior: Any, c: int) -> PosePrior:
    if isinstance(pose_prior, PosePrior):
        if pose_prior.num_parts != c:
            raise ValueError(f"pose_prior: expected a prior of C = {c} parts (the heatmaps' "
                             f"classes), got {pose_prior.num_parts}")
        return pose_prior
    if pose_prior == "auto":
        pose_prior = "coco" if c == 17 else "flat"
    if pose_prior not in ("coco", "flat"):
        raise ValueError(f"pose_prior: expected a PosePrior, 'auto', 'coco' or 'flat', got "
                         f"{pose_prior!r}")
    if pose_prior == "coco" and c != 17:
        raise ValueError(f"pose_prior: 'coco' describes 17 parts, the heatmaps have C = {c}")
    key = (pose_prior, c)
    if key not in _PRIORS:  # built once: the decoder runs per batch
        _PRIORS[key] = PosePrior.coco() if pose_prior == "coco" else PosePrior.flat(c)
    return _PRIORS[key]


def _part_order(part_order: Any, c: int) -> np.ndarray:
    if part_order is None:
        return np.asarray(COCO_PART_ORDER if c == 17 else range(c), np.int64)
    try:
        order = np.asarray(part_order)
    except (TypeError, ValueError):
        order = np.zeros(0)
    if (order.ndim != 1 or order.dtype.kind not in "iu"
            or sorted(order.tolist()) != list(range(c))):
        raise ValueError(f"part_order: expected a permutation of 0..{c - 1} (C = {c} parts), "
                         f"got {part_order!r}")
    return order.astype(np.int64)
