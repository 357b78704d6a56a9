"""Where a training process runs: alone, or as one rank of a torchrun job (DDP / FSDP2).

torchrun starts one process per rank and tells each its place in environment variables (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...). `Dist.from_env()` reads them and joins the process
group: NCCL when the rank has a GPU, gloo on CPUs. Without them the process trains alone and
nothing here touches torch.distributed. Rank 0 is the one that prints, saves and exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Dist:
        """This process's place: from torchrun's variables (joining the process group), else alone."""
        import torch

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device="cuda" if torch.cuda.is_available() else "cpu")
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device, backend = f"cuda:{local_rank}", "nccl"
        else:
            device, backend = "cpu", "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device
        )

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, value: float) -> float:
        """The sum of `value` over all ranks (itself when alone)."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def has_bf16(device: str) -> bool:
    """Whether `device` has bfloat16 arithmetic (then training computes in it under autocast)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN runs bfloat16 matmuls natively only with AVX512-BF16 or AMX
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
