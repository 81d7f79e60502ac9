"""Multi-process training under ``torchrun``: process group, devices, small collectives.

``torchrun --nproc_per_node=N -m train.cli ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several
machines) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` joins the group with
NCCL on CUDA and gloo on CPU. A single process without those variables needs no group.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Ranks from the torchrun environment (a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world=world,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def setup(device: torch.device, backend: str | None = None, timeout_min: float = 30.0) -> DistInfo:
    """Join the process group when launched by torchrun; returns this process's ranks."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(minutes=timeout_min))
    return info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device_for_collectives() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few floats over all ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device_for_collectives())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (used to stop all ranks together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device_for_collectives())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
