"""Training under `torchrun --nproc-per-node N` (data parallel; gloo on CPU, nccl on CUDA).

Every process draws the same permutation and augmentation (same seed), takes its equal share
of each global batch and DistributedDataParallel averages the gradients, so a step is the step
one process takes on the whole batch: exactly so for a model without BatchNorm, up to float
summation order. BatchNorm normalises each share with its own statistics (SyncBatchNorm is
CUDA-only), which is the one difference for BN models. Only the first process writes files.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import NoReturn

import torch
import torch.distributed as dist

from prunesearch.errors import UserError


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> None:
    """Join torchrun's process group (once); nothing when not launched by torchrun."""
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def joined() -> bool:
    """Whether this process is in a torchrun process group (`init_from_env` joined one)."""
    return dist.is_available() and dist.is_initialized()


def leave(code: int) -> NoReturn:
    """End a torchrun process without Python's finalisation. gloo's worker threads outlive
    destroy_process_group (importing torch._dynamo alone keeps the group referenced), and one
    that drops its last collective's tensors needs the GIL to do it: if that happens while the
    interpreter is finalising, the thread is killed and the process aborts ("terminate called
    without an active exception", SIGABRT; about 1 run in 5 of a 2-process fine-tune here).
    Files are closed by then; logs and the console are flushed here."""
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def world_size() -> int:
    return dist.get_world_size() if joined() else 1


def rank() -> int:
    return dist.get_rank() if joined() else 0


def is_main() -> bool:
    return rank() == 0


def check_batch(batch_size: int, what: str) -> None:
    """A global batch must split evenly, or the averaged gradient is not the batch's."""
    if batch_size % world_size():
        raise UserError(f"{what} = {batch_size} does not split evenly among the "
                        f"{world_size()} torchrun processes; make it a multiple of "
                        f"{world_size()} (or change --nproc-per-node).")


def share(t: torch.Tensor) -> torch.Tensor:
    """This process's equal share of a global batch."""
    return t if world_size() == 1 else t.tensor_split(world_size())[rank()]


def summed(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the processes (a copy)."""
    if world_size() == 1:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """What DDP does after a backward, for loops that backpropagate several losses per step
    (the supernet's sandwich rule): every gradient averaged over the processes."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()
