"""Rank and world: the only module that knows about torch.distributed.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT; a plain `python -m seedlings`
run has none of them and is world size 1. gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup() -> DistEnv:
    """Join the process group when launched by torchrun; choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        timeout = datetime.timedelta(minutes=30)
        store = round_store(rank, world, timeout)
        if store is None:
            dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        else:
            dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout, store=store,
                                    rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)


# Keys of the handshake in torchrun's shared store; the process group's own keys go under ROUND/<token>.
HELLO, WELCOME, ACK, ROUND = "seedlings/hello", "seedlings/welcome", "seedlings/ack", "seedlings/round"


def round_store(rank: int, world: int, timeout: datetime.timedelta):
    """The store for this round of workers: a key space that no earlier round wrote to; None for env://.

    Why: with `--rdzv-backend c10d`, torchrun's agent (TORCHELASTIC_USE_AGENT_STORE=True) hands every
    round of workers the same TCPStore for the whole job, and the process group's keys (each rank's
    gloo/nccl address) carry no round. After torchrun restarts the workers, a new worker can read the
    address its dead peer left there, fail to connect and cost one more restart, so `--max-restarts 1`
    is not enough to survive one failure (pytorch/pytorch#135712; TORCHELASTIC_RESTART_COUNT is per
    node, so it cannot name the round either). Rank 0 draws a fresh token and hands it to each rank in
    reply to a nonce that rank has just drawn, so a key left by a dead process is never taken for a
    live one. Without the agent's store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, other launchers) rank 0
    hosts a new store each round and env:// is safe as it is.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    shared = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                           is_master=False, timeout=timeout)
    deadline = time.monotonic() + timeout.total_seconds()
    token = _give_token(shared, world, deadline) if rank == 0 else _take_token(shared, rank, deadline)
    return dist.PrefixStore(f"{ROUND}/{token}", shared)


def _give_token(store, world: int, deadline: float) -> str:
    """Rank 0: answer every rank's latest nonce with a new token until each has acknowledged it."""
    token = uuid.uuid4().hex
    answered: dict[int, bytes] = {}
    waiting = set(range(1, world))
    for pause in _pauses(deadline, "every rank to join the process group"):
        for r in sorted(waiting):
            if store.check([f"{ACK}/{token}/{r}"]):
                waiting.discard(r)
            elif store.check([f"{HELLO}/{r}"]):
                nonce = store.get(f"{HELLO}/{r}")
                if answered.get(r) != nonce:  # a new process of rank r (or a stale key: answering costs nothing)
                    store.set(f"{WELCOME}/{r}", nonce + b" " + token.encode())
                    answered[r] = nonce
        if not waiting:
            return token
        time.sleep(pause)
    raise AssertionError("unreachable")  # _pauses raises at the deadline


def _take_token(store, rank: int, deadline: float) -> str:
    """Rank r > 0: announce a fresh nonce; the token is the one rank 0 sends back with that nonce."""
    nonce = uuid.uuid4().hex.encode()
    store.set(f"{HELLO}/{rank}", nonce)
    for pause in _pauses(deadline, "rank 0 to start this round"):
        if store.check([f"{WELCOME}/{rank}"]):
            echoed, _, token = store.get(f"{WELCOME}/{rank}").partition(b" ")
            if echoed == nonce:
                store.set(f"{ACK}/{token.decode()}/{rank}", b"1")
                return token.decode()
        time.sleep(pause)
    raise AssertionError("unreachable")


def _pauses(deadline: float, what: str):
    """Polling intervals, 10 ms growing to 0.5 s, until the deadline; then a clear error."""
    pause = 0.01
    while time.monotonic() < deadline:
        yield pause
        pause = min(0.5, pause * 1.5)
    raise TimeoutError(f"torch.distributed: timed out waiting for {what}")


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def log(env: DistEnv, msg: str) -> None:
    """Print to stderr on rank 0 only: one line per event, however many processes run."""
    if env.is_main:
        print(msg, file=sys.stderr, flush=True)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over all processes (in place, returned for convenience)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, env: DistEnv):
    """Rank 0's value of ``obj`` on every process."""
    if not env.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def local_threads(env: DistEnv, requested: int | None) -> int:
    """Intra-op threads per process: the cores shared by this node's processes."""
    if requested:
        return requested
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, per_node))
