"""``torch.distributed`` set-up for torchrun (env://): DDP on gloo (CPU) or nccl (CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aehg.config import resolve_device

__all__ = ["DistInfo", "all_reduce_mean", "all_reduce_sum", "barrier", "cleanup",
           "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun, and pick the device.

    torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them this is a
    single-process run. The backend is nccl when the process uses CUDA, gloo otherwise.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or "mps"
            (``train.device``).

    Returns:
        The process's rank information and its device.

    Raises:
        ConfigError: a malformed device name, or a device this machine does not have, e.g.
            ``"train.device: 'cuda' requested but CUDA is not available on this machine (use cpu
            or auto)"``; checked before any process group is created.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, key="train.device")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    info = DistInfo(rank=rank, world_size=world, local_rank=local_rank)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world)
    return info, dev


def barrier() -> None:
    """Synchronise all processes (no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over all processes (a copy; the input is unchanged)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values.clone()
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all processes (a copy; the input is unchanged).

    Integer tensors stay exact (counts). With nccl the tensor must be on this process's CUDA
    device.
    """
    out = values.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def cleanup() -> None:
    """Tear the process group down if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
