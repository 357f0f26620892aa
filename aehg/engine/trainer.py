"""The training loop: DDP via torchrun, AMP on CUDA, exact resume, validation, checkpoints.

Example:
    >>> from aehg.config import load_config
    >>> from aehg.engine import train
    >>> summary = train(load_config("configs/demo_pose.yaml", ["train.max_minutes=3"]))
    >>> summary["metrics"]["AP"]
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from aehg.checkpoint import (
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    unwrap_model,
)
from aehg.config import Config, config_to_dict, save_config
from aehg.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
)
from aehg.engine.ema import ModelEma
from aehg.engine.optim import build_optimizer, build_scheduler
from aehg.io import append_line, atomic_write, remove_stale_temp_files
from aehg.models import build_model
from aehg.models.losses import MultiStackLoss

__all__ = ["RUN_FILES", "NonFiniteLossError", "RunExistsError", "train", "move_to_device",
           "rng_state", "set_rng_state"]

log = logging.getLogger("aehg.train")

# The breakdown's values: 0-dim tensors (read at log steps only) or floats.
LossFn = Callable[[list, dict], tuple[torch.Tensor, dict[str, Any]]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


class RunExistsError(FileExistsError):
    """``train.output_dir`` already holds a run and neither resume nor overwrite was asked for."""


# The files that make a folder a run's output directory (any one of them is enough).
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl")


# --------------------------------------------------------------------------- helpers


def move_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a collated batch to ``device``; other entries (``meta``) unchanged."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers and tensors (weights-only safe)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


class _Logger:
    """JSON-lines metrics (and TensorBoard scalars when tensorboard is installed), rank 0 only.

    Every record is one whole line (:func:`aehg.io.append_line`). Opening the log makes it whole
    first (:func:`_repair_metrics`): a line cut short by a crash or a full disk is dropped, and
    on resume so are the records past the checkpoint's step, which the resumed run logs again.
    """

    def __init__(self, out_dir: Path, enabled: bool, keep_until_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            _repair_metrics(self.path, keep_until_step)
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard is optional
                self.tb = None
            else:
                self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_line(self.path, json.dumps(record))
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _repair_metrics(path: Path, keep_until_step: int | None) -> None:
    """Make ``metrics.jsonl`` whole before the run appends to it (rewritten atomically if needed).

    Drops, with a warning naming the file, every line that is not a whole JSON object: the last
    line when it has no newline (a write cut short) and any line that does not parse. With
    ``keep_until_step`` (a resume), also drops the records whose ``step`` is larger: they were
    logged after the checkpoint was written, and the resumed run logs those steps again.
    """
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with its newline
    kept: list[bytes] = []
    broken: list[int] = [len(lines) + 1] if tail else []
    later = 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            broken.append(number)
            continue
        if not isinstance(record, dict):
            broken.append(number)
            continue
        step = record.get("step")
        if (keep_until_step is not None and isinstance(step, (int, float))
                and not isinstance(step, bool) and step > keep_until_step):
            later += 1
            continue
        kept.append(line)
    if not broken and not later:
        return
    atomic_write(path, lambda f: f.write(b"".join(line + b"\n" for line in kept)))
    if broken:
        where = ", ".join(str(n) for n in sorted(broken))
        log.warning("%s: dropped line%s %s: not a whole JSON record (a write cut short by a crash "
                    "or a full disk)", path, "s" if len(broken) > 1 else "", where)
    if later:
        log.info("%s: dropped %d record%s past step %d (logged after the resumed checkpoint; "
                 "those steps are logged again)", path, later, "s" if later > 1 else "",
                 keep_until_step)


def _best_key(cfg: Config) -> str:
    if cfg.train.best_metric != "auto":
        return cfg.train.best_metric
    return {"pose": "AP", "single_pose": "PCKh@0.5"}.get(cfg.data.kind, "ngR@20")


# --------------------------------------------------------------------------- data statistics

# A run that loses more than this fraction of its instances, parts or links is warned about.
_WARN_FRACTION = 0.01


def _stat_keys(kind: str) -> tuple[str, ...]:
    """The per-sample ``meta["stats"]`` counts summed per epoch, in the order ranks reduce them.

    Pose data has no links (their counts would always be 0); relation data adds links and the
    collision counts of :func:`aehg.data.relations.count_collisions`.
    """
    keys = ("instances", "instances_dropped", "parts", "parts_outside")
    if kind == "relations":
        keys += ("links", "links_dropped", "object_collisions", "link_collisions")
    return keys


class _EpochStats:
    """The target statistics of the samples one process trained on in one epoch.

    The workers count while building the targets (``meta["stats"]`` of each sample); here each
    sample only adds a handful of ints, and the ranks' sums meet once per epoch.
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.counts = dict.fromkeys(("images", *keys), 0)

    def add(self, metas: list[dict[str, Any]] | None) -> None:
        """Add the samples of one collated batch (its ``"meta"`` list; None: nothing)."""
        counts = self.counts
        for meta in metas or ():
            stats = meta.get("stats") if isinstance(meta, dict) else None
            if stats is None:  # a dataset that does not count
                continue
            counts["images"] += 1
            for k in self.keys:
                counts[k] += stats.get(k, 0)

    def reduce(self, device: torch.device) -> dict[str, int]:
        """The sums over all processes; every rank must call it (one collective)."""
        names = list(self.counts)
        values = torch.tensor([self.counts[k] for k in names], dtype=torch.int64, device=device)
        return dict(zip(names, (int(v) for v in all_reduce_sum(values).tolist()), strict=True))


def _percent(count: int, total: int) -> str:
    return f"{count} of {total} ({100.0 * count / total:.2f}%)" if total else f"{count}"


def _data_warning(stats: dict[str, int], cfg: Config, *, augmented: bool,
                  skip: set[str] | None = None) -> str | None:
    """One message for whatever loses more than 1% of its instances, parts or links, else None.

    Each part of the message names the config key that controls the loss (every key named
    exists in :class:`aehg.config.DataConfig`).

    Args:
        stats: counts with the keys of :class:`aehg.data.targets.TargetStats`.
        cfg: the run's config (for the current values of the keys named).
        augmented: the counts come from augmented training samples (else from the annotations
            at validation geometry, where the whole image fits the map).
        skip: count keys already warned about (left out); the keys warned about now are added.
    """
    d = cfg.data
    a = d.augment
    # Only rotation, translation and zooming in move annotated parts out of the map.
    if augmented and (a.rotation > 0 or a.translate > 0 or a.scale_max > 1):
        outside = (f", moved out by the augmentation: lower data.augment.scale_max "
                   f"({a.scale_max}), data.augment.translate ({a.translate}) or "
                   f"data.augment.rotation ({a.rotation})")
    else:
        # The validation transform fits the whole image into the map: only parts annotated
        # outside their image fall outside; no key changes that.
        outside = " (annotated outside their image)"
    checks = (
        ("instances_dropped", "instances",
         f"instances beyond data.max_instances ({d.max_instances}) have no tag row: raise "
         f"data.max_instances"),
        ("parts_outside", "parts", f"visible parts fall outside the output map{outside}"),
        ("links_dropped", "links",
         f"links are left out of the targets: raise data.max_links ({d.max_links}); links of "
         f"instances beyond data.max_instances or outside the map are left out too"),
    )
    problems = []
    for count_key, total_key, text in checks:
        count, total = stats.get(count_key, 0), stats.get(total_key, 0)
        if total > 0 and count > _WARN_FRACTION * total and count_key not in (skip or ()):
            problems.append(f"{_percent(count, total)} {text}")
            if skip is not None:
                skip.add(count_key)
    return "; ".join(problems) if problems else None


def _format_dataset_stats(stats: dict[str, int], cfg: Config) -> str:
    """The training set's statistics (``CocoBase.stats``) as one readable block."""
    d = cfg.data
    rows = [("images", f"{stats.get('images', 0)}"),
            ("instances", f"{stats.get('instances', 0)}"),
            ("parts (visible)", f"{stats.get('parts', 0)}"),
            (f"instances over data.max_instances ({d.max_instances})",
             _percent(stats.get("instances_dropped", 0), stats.get("instances", 0))),
            ("parts outside the output map",
             _percent(stats.get("parts_outside", 0), stats.get("parts", 0)))]
    if d.kind == "relations":
        rows += [("links", f"{stats.get('links', 0)}"),
                 (f"links dropped (over data.max_links ({d.max_links}), or of unusable "
                  f"instances)",
                  _percent(stats.get("links_dropped", 0), stats.get("links", 0))),
                 ("object collisions (one class, one pixel)",
                  f"{stats.get('object_collisions', 0)}"),
                 ("link collisions (one pixel)", f"{stats.get('link_collisions', 0)}")]
    if stats.get("skipped_images"):
        rows.append(("skipped images (unreadable)", f"{stats['skipped_images']}"))
    width = max(len(label) for label, _ in rows)
    head = (f"training data: annotations at validation geometry (input {d.input_size} px, "
            f"output {d.output_size} px, no augmentation)")
    return "\n".join([head, *(f"  {label:<{width}}  {value}" for label, value in rows)])


def _report_dataset_stats(dataset: Dataset, cfg: Config) -> None:
    """Log the training set's statistics and warn (once) about what its targets lose.

    One pass over the annotations (``CocoBase.stats``; no image is read).
    """
    stats = getattr(dataset, "stats", None)
    if not isinstance(stats, dict):
        return
    log.info("%s", _format_dataset_stats(stats, cfg))
    warning = _data_warning(stats, cfg, augmented=False)
    if warning is not None:
        log.warning("training data at validation geometry: %s", warning)


def _record_flip_map(cfg: Config, train_set: Dataset) -> None:
    """Store the flip map the training set resolved (category field or part names) in
    ``cfg.data.flip_map``: the saved config and every checkpoint then carry the swap the model
    was trained with, and inference never has to guess it."""
    source = getattr(train_set, "flip_map_source", None)
    if cfg.data.kind == "pose" and cfg.data.flip_map is None and source is not None:
        cfg.data.flip_map = [int(v) for v in train_set.flip_map]


def _record_pose_prior(cfg: Config, train_set: Dataset) -> None:
    """Fit the grouping prior on the training annotations when ``eval.pose_prior`` is
    ``train`` and store it in ``cfg.eval.fitted_prior`` (docs/design.md §4), so that
    validation, the saved config and every checkpoint group with it."""
    if cfg.data.kind != "pose" or cfg.eval.pose_prior != "train" or \
            cfg.eval.fitted_prior is not None:
        return
    from aehg.inference import fit_pose_prior

    cfg.eval.fitted_prior = fit_pose_prior(train_set)
    log.info("eval.pose_prior: fitted on the training annotations (%d parts), stored in "
             "eval.fitted_prior", len(cfg.eval.fitted_prior.mean))


# --------------------------------------------------------------------------- step monitoring


class _StepMonitor:
    """What the training loop needs to know about its steps, read without waiting per step.

    Each step only queues small device ops (:meth:`record`): the step's loss and top-level
    terms as one vector, a sticky "non-finite" flag with the first such step and its terms.
    :meth:`read` brings everything to the host in one transfer: at log boundaries and before
    any checkpoint write, so that a NaN stops the run before it reaches ``last.pt``. In DDP the
    read carries one all-reduce: the ranks' non-finite flags, and rank 0's clock (its
    time-budget decision and time fraction), so that every rank stops at the same step.
    """

    def __init__(self, device: torch.device, info: DistInfo, criterion: Any,
                 out_dir: Path) -> None:
        self.device = device
        self.info = info
        self.criterion = criterion
        self.out_dir = out_dir
        self.names: list[str] = []          # "loss", then the top-level terms
        self.last: torch.Tensor | None = None
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first = torch.zeros((), dtype=torch.int64, device=device)
        self.bad_values: torch.Tensor | None = None
        self.read_step = 0                  # the step of the last read
        self.pending = 0                    # steps recorded since

    def record(self, step: int, loss: torch.Tensor, terms: dict[str, Any]) -> None:
        """Queue the bookkeeping of step ``step`` (1-based); no host synchronisation."""
        names = ["loss", *(k for k in terms if "/" not in k)]
        values = [loss.detach().reshape(()).float()]
        for k in names[1:]:
            v = terms[k]
            values.append(v.detach().reshape(()).float().to(self.device)
                          if isinstance(v, torch.Tensor)
                          else torch.full((), float(v), device=self.device))
        vec = torch.stack(values)
        if names != self.names or self.bad_values is None:
            # A new set of terms (first step, or a loss that changed them): a fresh snapshot;
            # the flag and the first bad step stay.
            self.names = names
            self.bad_values = torch.zeros_like(vec)
        bad_now = ~torch.isfinite(vec[0])
        newly = bad_now & ~self.bad
        # The step goes in as a kernel argument (offset from the last read: small, exact).
        self.first = torch.where(newly, step - self.read_step, self.first)
        self.bad_values = torch.where(newly, vec, self.bad_values)
        self.bad = self.bad | bad_now
        self.last = vec
        self.pending += 1

    def read(self, step: int, epoch: int, stop_now: bool = False,
             fraction: float = 0.0) -> tuple[dict[str, float], bool, float]:
        """Read what was recorded (one transfer; every rank calls it at the same steps).

        Args:
            step: the current step (the last recorded one).
            epoch: the current epoch (epochs end with a read, so it holds for every step
                since the last read).
            stop_now: rank 0's time-budget decision (ignored on the other ranks).
            fraction: rank 0's share of the time budget used.

        Returns:
            The last step's values by name (``loss`` and the terms; empty before any step),
            whether rank 0 decided to stop, and rank 0's time fraction.

        Raises:
            NonFiniteLossError: a recorded loss on any rank was NaN/inf.
            ValueError: a deferred range check of the loss found an index outside the maps.
        """
        main = self.info.is_main
        take = getattr(self.criterion, "take_target_errors", None)
        errors = take() if callable(take) else {}
        zero = torch.zeros((), device=self.device)
        # Summed over the ranks: every rank learns whether any rank must stop, and why.
        shared = torch.stack([self.bad.float(),
                              torch.full((), float(stop_now and main), device=self.device),
                              torch.full((), fraction if main else 0.0, device=self.device),
                              sum((v.float() for v in errors.values()), zero)])
        if self.info.enabled:
            shared = all_reduce_sum(shared)
        parts = [shared, self.bad.float().reshape(1), self.first.float().reshape(1)]
        if self.last is not None and self.bad_values is not None:
            parts += [self.last, self.bad_values]
        parts += [v.float().reshape(1) for v in errors.values()]
        values = torch.cat(parts).tolist()   # the one host synchronisation
        any_bad, stop, frac, any_errors, mine, first = values[:6]
        n = len(self.names) if self.last is not None else 0
        last = dict(zip(self.names, values[6:6 + n], strict=True)) if n else {}
        bad_values = dict(zip(self.names, values[6 + n:6 + 2 * n], strict=True)) if n else {}
        counts = dict(zip(errors, values[6 + 2 * n:], strict=True))
        since = self.read_step
        self.read_step, self.pending = step, 0
        if any_errors > 0:
            what = ", ".join(f"batch[{k!r}] in {int(c)} step{'s' if c > 1 else ''}"
                             for k, c in counts.items() if c > 0) or "on another process"
            raise ValueError(f"training targets with an index outside the model's maps between "
                             f"step {since + 1} and {step} (epoch {epoch}): {what}; those rows "
                             f"were ignored (check the dataset's targets)")
        if any_bad > 0:
            path = self.out_dir / "last.pt"
            kept = (f"stopped, the last good checkpoint is kept "
                    f"({path if path.exists() else 'none written yet'})")
            if mine > 0:
                detail = ", ".join(f"{k}={v:.4g}" for k, v in sorted(bad_values.items())
                                   if k != "loss")
                raise NonFiniteLossError(
                    f"non-finite loss at step {since + int(first)} (epoch {epoch}): "
                    f"total={bad_values.get('loss')}, {detail}; {kept}")
            raise NonFiniteLossError(
                f"non-finite loss on another process between step {since + 1} and {step} "
                f"(epoch {epoch}); {kept}")
        return last, stop > 0, frac


def _minutes(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:d}:{rest % 60:02d}"


class _Progress:
    """Progress of a run (rank 0): a tqdm bar on a terminal, else a line per log interval.

    The bar counts steps up to the step budget (``max_steps``, or epochs × steps per epoch);
    a run limited by time alone (``max_minutes`` and no ``max_steps``) counts minutes instead,
    from the clock, with the step in the postfix. When stderr is not a terminal (a log file)
    nothing is drawn per step: every ``log_interval`` steps one log line gives the step, elapsed
    time, ETA, loss and learning rate.
    """

    def __init__(self, enabled: bool, total_steps: int, start_step: int, max_minutes: float,
                 by_time: bool) -> None:
        isatty = getattr(sys.stderr, "isatty", None)
        self.enabled = enabled
        self.tty = bool(callable(isatty) and isatty())
        self.total_steps, self.start_step = total_steps, start_step
        self.max_minutes, self.by_time = max_minutes, by_time
        self.bar: tqdm | None = None
        if enabled and self.tty:
            if by_time:
                self.bar = tqdm(total=max_minutes, desc="train", unit="min", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} min "
                                           "[{elapsed}<{remaining}{postfix}]")
            else:
                self.bar = tqdm(total=total_steps, initial=start_step, desc="train",
                                dynamic_ncols=True)

    def step(self, step: int, elapsed: float) -> None:
        """After each step (host only: no tensor is read)."""
        if self.bar is None:
            return
        if self.by_time:
            self.bar.set_postfix_str(f"step {step}", refresh=False)
            self.bar.update(min(elapsed / 60.0, self.max_minutes) - self.bar.n)
        else:
            self.bar.update(1)

    def show(self, step: int, epoch: int, elapsed: float, values: dict[str, float],
             lr: float, line: bool) -> None:
        """At a read: the loss in the bar's postfix, or (``line``) a log line without a bar."""
        if not self.enabled:
            return
        loss = values.get("loss", float("nan"))
        if self.bar is not None:
            post = {"loss": f"{loss:.4g}", "lr": f"{lr:.2e}", "epoch": epoch}
            if self.by_time:
                post["step"] = step
            self.bar.set_postfix(post, refresh=False)
            return
        if not line:
            return
        done = step - self.start_step
        eta = (self.total_steps - step) * elapsed / done if done > 0 else float("inf")
        if self.max_minutes > 0:
            eta = min(eta, 60.0 * self.max_minutes - elapsed)
        where = (f"{step}, {elapsed / 60:.2f}/{self.max_minutes:g} min" if self.by_time
                 else f"{step}/{self.total_steps}")
        log.info("step %s  elapsed %s  ETA %s  loss %.4g  lr %.2e  epoch %d", where,
                 _minutes(elapsed), _minutes(eta) if eta != float("inf") else "?", loss, lr,
                 epoch)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- training


def train(cfg: Config, *, resume: str | None = None, loss_fn: LossFn | None = None,
          validate: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train the model of ``cfg``; write everything under ``cfg.train.output_dir``.

    Launch with ``python tools/train.py`` for one process or ``torchrun --nproc_per_node=N
    tools/train.py`` for DDP (env://, gloo on CPU, nccl on CUDA). Only rank 0 logs, validates and
    writes checkpoints.

    What the targets lose reaches the log: at the start, the training set's statistics
    (``CocoBase.stats``: one pass over the annotations at validation geometry); every epoch, the
    samples' ``meta["stats"]`` summed over batches and processes, as one ``data/...`` record of
    ``metrics.jsonl`` (also for an epoch cut short by the step or time budget). More than 1% of
    the instances, parts or links lost warns, naming the config key to change (once for the
    dataset, and once per run for each kind of loss seen in the epochs' records).

    An output directory that already holds a run (any of :data:`RUN_FILES`) is only used
    with ``resume`` (continue it) or ``overwrite`` (replace it); otherwise the call is refused
    before anything is written. Temp files that an interrupted checkpoint write left in the
    output directory are removed at the start (:func:`aehg.io.remove_stale_temp_files`).

    Args:
        cfg: the resolved config (saved as ``config.yaml`` in the output directory).
        resume: ``"auto"`` (``last.pt`` of the output directory when present), a checkpoint path,
            or None (start afresh). ``metrics.jsonl`` keeps the records up to the checkpoint's
            step.
        loss_fn: replaces :class:`~aehg.models.losses.MultiStackLoss` (tests, custom losses).
        validate: run periodic validation (``cfg.train.val_interval`` epochs, and at the end).
        overwrite: start afresh in an output directory that holds a run: its ``last.pt``,
            ``best.pt`` and ``metrics.jsonl`` (and TensorBoard event files) are deleted and
            ``config.yaml`` is rewritten, so the two runs are never mixed.

    Returns:
        A summary: ``step``, ``epoch``, ``seconds``, ``metrics`` (last validation), ``best``,
        ``output_dir`` and the trained ``model`` (unwrapped from DDP).

    Raises:
        NonFiniteLossError: the loss became NaN/inf; ``last.pt`` from before is kept. Found at
            the next read (every ``log_interval`` steps, epoch end, before any checkpoint):
            the message names the first bad step, its epoch and terms.
        RunExistsError: the output directory holds a run and neither ``resume`` nor
            ``overwrite`` is given; the message names the folder and the three ways out.
        ValueError: ``resume`` and ``overwrite`` together; a checkpoint that cannot be resumed
            (the message names it); training targets with an index outside the model's maps
            (found at the next read, like a NaN).
        ConfigError: ``train.device`` names a device this machine does not have.
        OSError: a file could not be written (the message names it, e.g. ``no space left on
            device while writing …/last.pt``).
    """
    if overwrite and resume:
        raise ValueError(f"resume={resume!r} and overwrite: choose one (--resume continues the "
                         f"run in {cfg.train.output_dir}, --overwrite replaces it)")
    info, device = init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, device, resume, loss_fn, validate, overwrite)
    finally:
        cleanup()


def _train(cfg: Config, info: DistInfo, device: torch.device, resume: str | None,
           loss_fn: LossFn | None, validate: bool, overwrite: bool) -> dict[str, Any]:
    from aehg.data import build_dataloader, build_dataset
    from aehg.data.loader import EpochBatchSampler
    from aehg.data.render import TargetSpec, render_targets

    tc = cfg.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    out_dir = Path(tc.output_dir)
    if not resume:
        _claim_output_dir(out_dir, info, device, overwrite)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temp_files(out_dir)
        if removed:
            log.info("removed %d temp file%s of an interrupted write: %s", len(removed),
                     "s" if len(removed) > 1 else "", ", ".join(str(p) for p in removed))
    seed_everything(tc.seed + info.rank)

    # Rank 0 builds (and, for synthetic data, generates) the dataset first; others then read it.
    # The workers build sparse targets; the dense maps are drawn on the device (render_targets).
    if info.is_main:
        train_set = build_dataset(cfg, "train", sparse_targets=True)
    barrier()
    if not info.is_main:
        train_set = build_dataset(cfg, "train", sparse_targets=True)
    target_spec = TargetSpec.from_config(cfg)
    _record_flip_map(cfg, train_set)
    _record_pose_prior(cfg, train_set)
    if info.is_main:
        save_config(cfg, out_dir / "config.yaml")
    val_set = build_dataset(cfg, "val") if (validate and info.is_main) else None
    if info.is_main:
        # One pass over the annotations (no image read): what the targets lose before any
        # augmentation, once per run.
        _report_dataset_stats(train_set, cfg)
    stat_keys = _stat_keys(cfg.data.kind)
    warned: set[str] = set()  # kinds of loss already warned about in an epoch record

    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=tc.seed, drop_last=True)
    steps_per_epoch = len(sampler) // tc.batch_size
    if len(train_set) == 0:
        where = getattr(train_set, "json_path", cfg.data.root)
        raise ValueError(f"{where}: no usable training image (no image has a usable annotation "
                         f"or every one was skipped); check the training data")
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size: {tc.batch_size} is larger than the "
                         f"{len(sampler)} training images per process")
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps > 0:
        total_steps = min(total_steps, tc.max_steps)

    model = build_model(cfg.model).to(device)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, tc)
    clock: dict[str, float] = {}

    def time_fraction() -> float | None:
        if tc.max_minutes <= 0 or "start" not in clock:
            return None
        if info.enabled:
            # Rank 0's fraction, shared at each read: every rank follows the same schedule.
            return clock.get("shared_fraction", 0.0)
        return (time.perf_counter() - clock["start"]) / (60.0 * tc.max_minutes)

    scheduler = build_scheduler(optimizer, tc, steps_per_epoch, total_steps, time_fraction)
    use_amp = device.type == "cuda" and tc.amp != "none"
    amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and tc.amp == "fp16")
    if tc.amp != "none" and device.type != "cuda" and info.is_main:
        log.warning("train.amp=%s needs CUDA; training in float32 on %s", tc.amp, device)
    # Deferred target checks: the loss never waits for the device (see _StepMonitor).
    criterion = (loss_fn if loss_fn is not None
                 else MultiStackLoss(cfg.loss, defer_checks=True).to(device))

    step, epoch, start_in_epoch, best = 0, 0, 0, float("-inf")
    ckpt_path = _resume_path(resume, out_dir)
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        # With a moving average, "model" is the average and "train_model" the trained weights.
        load_model_weights(model, ckpt, source=f"checkpoint {ckpt_path}",
                           entry="train_model" if "train_model" in ckpt else "model")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if "scaler" in ckpt and ckpt["scaler"]:
                scaler.load_state_dict(ckpt["scaler"])
            step, epoch = int(ckpt["step"]), int(ckpt["epoch"])
        except KeyError as exc:
            raise ValueError(f"--resume: checkpoint {ckpt_path}: has no {exc} entry (expected a "
                             f"last.pt or best.pt written by training)") from None
        except (ValueError, TypeError, RuntimeError) as exc:
            # e.g. another train.optimizer than the checkpoint's: torch names no file.
            raise ValueError(f"--resume: checkpoint {ckpt_path}: its optimizer/scheduler state "
                             f"does not fit this run (train.optimizer changed?): {exc}") from exc
        start_in_epoch = int(ckpt.get("step_in_epoch", 0))
        best = float(ckpt.get("best_metric", float("-inf")))
        rng = ckpt.get("rng", {})
        if info.rank in rng:
            set_rng_state(rng[info.rank])
        elif "torch" in rng:
            set_rng_state(rng)
        if info.is_main:
            log.info("resumed from %s at epoch %d, step %d", ckpt_path, epoch, step)

    ema = ModelEma(unwrap_model(model), tc.ema_decay) if tc.ema_decay > 0 else None
    if ema is not None and ckpt_path is not None and "train_model" in ckpt:
        load_model_weights(ema.module, ckpt, source=f"checkpoint {ckpt_path}")
        ema.updates = int(ckpt.get("ema_updates", 0))
    ddp: nn.Module = model
    if info.enabled:
        if tc.sync_bn and device.type == "cuda":
            ddp = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = DistributedDataParallel(ddp, device_ids=[device] if device.type == "cuda" else None)
    if resume and ckpt_path is None and info.is_main:
        log.warning("--resume %s: no checkpoint in %s; starting afresh", resume, out_dir)
    # On resume (even one that found no checkpoint: step 0) the log keeps what precedes ``step``.
    logger = _Logger(out_dir, info.is_main, keep_until_step=step if resume else None)
    best_key = _best_key(cfg)
    metrics: dict[str, float] = {}

    def state(step_in_epoch: int) -> dict[str, Any]:
        rngs = _gather_rng(info)
        weights = {"model": unwrap_model(model).state_dict()}
        if ema is not None:
            weights = {"model": ema.module.state_dict(), "ema_updates": ema.updates,
                       "train_model": unwrap_model(model).state_dict()}
        return {
            **weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "epoch": epoch, "step": step, "step_in_epoch": step_in_epoch,
            "rng": rngs, "best_metric": best, "config": config_to_dict(cfg),
        }

    monitor = _StepMonitor(device, info, criterion, out_dir)

    saved = {"step": step}

    def checkpoint(step_in_epoch: int) -> None:
        if monitor.pending:
            monitor.read(step, epoch)  # a non-finite loss raises before last.pt is written
        s = state(step_in_epoch)  # every rank joins the RNG gather
        if info.is_main:
            save_checkpoint(out_dir / "last.pt", s)
        saved["step"] = step

    t_start = clock["start"] = time.perf_counter()
    progress = _Progress(info.is_main, total_steps, step, tc.max_minutes,
                         by_time=tc.max_minutes > 0 and tc.max_steps == 0)
    stop = step >= total_steps
    batches: Iterator[dict[str, Any]] | None = None
    while not stop and epoch < tc.epochs:
        if batches is None or not cfg.data.persistent_workers:
            # Persistent: one stream of batches over every remaining epoch, so that the workers
            # (started once) keep loading ahead across epoch boundaries; else a loader and new
            # workers per epoch. Each index carries its epoch (EpochBatchSampler), which
            # selects the augmentation in whichever process loads it.
            last = tc.epochs if cfg.data.persistent_workers else epoch + 1
            stream = EpochBatchSampler(sampler, tc.batch_size, range(epoch, last),
                                       start=start_in_epoch, max_batches=total_steps - step)
            batches = iter(build_dataloader(train_set, cfg, "train", info.enabled,
                                            batch_sampler=stream))
        ddp.train()
        in_epoch = start_in_epoch
        epoch_stats = _EpochStats(stat_keys)
        for batch in itertools.islice(batches, steps_per_epoch - start_in_epoch):
            epoch_stats.add(batch.get("meta"))
            batch = render_targets(move_to_device(batch, device), target_spec)
            images = batch["image"].contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                outputs = ddp(images)
            loss, terms = criterion(outputs, batch)
            # No host read per step: the loss and terms stay on the device until a read.
            monitor.record(step + 1, loss, terms)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(unwrap_model(model))
            step += 1
            in_epoch += 1
            lr = optimizer.param_groups[0]["lr"]
            elapsed = time.perf_counter() - t_start
            progress.step(step, elapsed)
            out_of_time = tc.max_minutes > 0 and elapsed >= 60.0 * tc.max_minutes
            boundary = step % tc.log_interval == 0
            if boundary or step == 1:
                # The one read per log interval. In DDP only rank 0's clock decides the time
                # stop, shared by the read, so that every rank stops at the same step.
                values, stop_by_time, fraction = monitor.read(
                    step, epoch, stop_now=out_of_time,
                    fraction=elapsed / (60.0 * tc.max_minutes) if tc.max_minutes > 0 else 0.0)
                clock["shared_fraction"] = fraction
                if info.enabled:
                    out_of_time = stop_by_time
                logger.write({"step": step, "epoch": epoch, "lr": lr,
                              "loss": values.get("loss"), "time": elapsed,
                              **{k: v for k, v in values.items() if k != "loss"}})
                progress.show(step, epoch, elapsed, values, lr, line=boundary)
            elif info.enabled:
                out_of_time = False  # ranks decide the time stop together, at a read
            if tc.checkpoint_interval > 0 and step % tc.checkpoint_interval == 0:
                checkpoint(in_epoch)
            if step >= total_steps or out_of_time:
                stop = True
                break
        if monitor.pending:
            monitor.read(step, epoch)  # the epoch's last steps, before it counts as done
        # Every rank joins the reduction; a stop inside the epoch (time or step budget) writes
        # the partial epoch's record.
        _log_epoch_stats(epoch_stats.reduce(device), cfg, info, logger, step, epoch, warned)
        start_in_epoch = 0
        if not stop:
            epoch += 1
            in_epoch = 0
        finished = stop or epoch >= tc.epochs
        # On a small set epochs last a few steps: a full checkpoint at each end would cost more
        # than the steps (docs/design.md §9). Steps, not a clock, decide, so that DDP ranks agree.
        if finished or step - saved["step"] >= tc.checkpoint_min_steps:
            checkpoint(in_epoch)
        if validate and (finished or epoch % tc.val_interval == 0):
            metrics = _validate_and_track(cfg, model if ema is None else ema.module, val_set,
                                          info, out_dir, step, epoch, logger, best_key,
                                          state(in_epoch), best)
            best = max(best, metrics.get(best_key, float("-inf")))
        barrier()
    batches = None  # stops the loader's workers
    progress.close()
    logger.close()
    seconds = time.perf_counter() - t_start
    return {"step": step, "epoch": epoch, "seconds": seconds, "metrics": metrics,
            "best": best, "output_dir": str(out_dir),
            "model": unwrap_model(model) if ema is None else ema.module}


def _log_epoch_stats(counts: dict[str, int], cfg: Config, info: DistInfo, logger: _Logger,
                     step: int, epoch: int, warned: set[str]) -> None:
    """Write one epoch's summed target statistics (``data/...``) and warn if too much is lost:
    once per run for each kind of loss (``warned`` holds the kinds already reported), so that
    a long run of short epochs does not repeat itself. Rank 0 only; nothing for an epoch
    without samples (a resume at its very end)."""
    if not info.is_main or counts.get("images", 0) == 0:
        return
    logger.write({"step": step, "epoch": epoch, **{f"data/{k}": v for k, v in counts.items()}})
    warning = _data_warning(counts, cfg, augmented=True, skip=warned)
    if warning is not None:
        # The progress bar is still open: clear it so that the warning gets lines of its own.
        with tqdm.external_write_mode():
            log.warning("epoch %d (%d training samples): %s", epoch, counts["images"], warning)


def _validate_and_track(cfg: Config, model: nn.Module, val_set: Dataset | None, info: DistInfo,
                        out_dir: Path, step: int, epoch: int, logger: _Logger, best_key: str,
                        snapshot: dict[str, Any], best: float) -> dict[str, float]:
    if not info.is_main or val_set is None:
        return {}
    from aehg.evaluation import evaluate_model

    metrics = evaluate_model(unwrap_model(model), val_set, cfg)
    logger.write({"step": step, "epoch": epoch,
                  **{f"val/{k}": float(v) for k, v in metrics.items()}})
    value = metrics.get(best_key)
    if value is not None and value > best:
        snapshot["best_metric"] = float(value)
        save_checkpoint(out_dir / "best.pt", snapshot)
    return metrics


def _gather_rng(info: DistInfo) -> dict[int, Any]:
    """Every rank's RNG state, keyed by rank, so a resumed DDP run continues exactly."""
    mine = rng_state()
    if not info.enabled:
        return {0: mine}
    import torch.distributed as dist

    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return dict(enumerate(states))


def _claim_output_dir(out_dir: Path, info: DistInfo, device: torch.device,
                      overwrite: bool) -> None:
    """Refuse an output directory that holds a run, or clear it with ``overwrite``.

    Rank 0 looks (it is the one that writes there); every rank learns the answer through one
    collective, so all of them raise together instead of waiting for each other.

    Raises:
        RunExistsError: the folder holds a run and ``overwrite`` is False.
    """
    found = [name for name in RUN_FILES if (out_dir / name).exists()] if info.is_main else []
    flag = torch.tensor([len(found)], dtype=torch.int64, device=device)
    if int(all_reduce_sum(flag).item()) == 0:
        return
    if not overwrite:
        held = f" ({', '.join(found)})" if found else ""
        raise RunExistsError(
            f"{out_dir} already holds a run{held}; to continue it pass --resume auto, to start "
            f"another choose a new train.output_dir=<folder>, or pass --overwrite to replace it")
    if info.is_main:
        removed = [name for name in found if name != "config.yaml"]
        for name in removed:
            (out_dir / name).unlink()
        # Event files of the old run would show as a second curve in the same TensorBoard run.
        events = out_dir / "tensorboard"
        if events.is_dir():
            for path in events.glob("events.out.tfevents.*"):
                if path.is_file():
                    path.unlink()
        log.warning("--overwrite: replacing the run in %s (removed %s)", out_dir,
                    ", ".join(removed) if removed else "nothing but config.yaml")
    barrier()


def _resume_path(resume: str | None, out_dir: Path) -> Path | None:
    if resume is None or resume == "":
        return None
    if resume == "auto":
        last = out_dir / "last.pt"
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line of ``tools/train.py``: ``--config C [--resume auto|PATH] [--overwrite]
    [--debug] [key=value ...]``.

    Returns:
        0 when training ends; 2 after an expected failure (config, data, checkpoint, device,
        permissions, full disk, an existing run without ``--resume``/``--overwrite``), printed as
        one ``error: …`` line; 3 when the loss became NaN/inf; 130 when interrupted
        (:func:`aehg.cli.run_tool`).
    """
    import argparse

    from aehg.cli import add_debug_argument, run_tool
    from aehg.config import load_config

    ap = argparse.ArgumentParser(prog="tools/train.py", description="Train an aehg model.")
    ap.add_argument("--config", required=True, help="YAML config file")
    ap.add_argument("--resume", default=None,
                    help="'auto' (last.pt of the output directory if present) or a checkpoint")
    ap.add_argument("--overwrite", action="store_true",
                    help="start afresh in an output directory that holds a run, replacing its "
                         "checkpoints, config and metrics")
    ap.add_argument("--no-val", action="store_true", help="skip periodic validation")
    add_debug_argument(ap)
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-3")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary: dict[str, Any] = {}

    def run() -> None:
        cfg = load_config(args.config, args.overrides)
        summary.update(train(cfg, resume=args.resume, validate=not args.no_val,
                             overwrite=args.overwrite))

    # NonFiniteLossError keeps its own code (3): the data and config were fine, the run diverged.
    code = run_tool(run, debug=args.debug, exit_codes={NonFiniteLossError: 3})
    if code:
        return code
    metrics = " ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items()
                       if isinstance(v, float))
    print(f"done: {summary['step']} steps in {summary['seconds']:.0f} s -> "
          f"{summary['output_dir']} {metrics}")
    return 0
