"""round_store: every round of torchrun workers agrees on a key space that no earlier round wrote to.

A TCPStore stands in for the one torchrun's agent shares across rounds; keys a dead round left behind
must never be taken for this round's (tests/deploy/test_dist.py shows the real failure they cause).
"""

from __future__ import annotations

import datetime
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from seedlings.training import distributed as D  # noqa: E402

TIMEOUT = datetime.timedelta(seconds=10)
WORLD = 3


@pytest.fixture
def agent_store(monkeypatch):
    """A store hosted 'by the agent', and the environment torchrun gives workers that share it."""
    server = dist.TCPStore("127.0.0.1", 0, WORLD, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    return server


def one_round(rank0_late: float = 0.0) -> list:
    """Each rank's store for one round; rank 0 may start late, as it does when its node is slower."""

    def join(rank):
        if rank == 0:
            time.sleep(rank0_late)
        return D.round_store(rank, WORLD, TIMEOUT)

    with ThreadPoolExecutor(WORLD) as pool:
        return list(pool.map(join, range(WORLD)))


def test_every_rank_gets_the_same_fresh_key_space(agent_store):
    first = one_round()
    first[0].set("gloo/address/0", b"old")
    assert [s.get("gloo/address/0") for s in first] == [b"old"] * WORLD  # one key space for the round
    second = one_round()
    assert all(not s.check(["gloo/address/0"]) for s in second), "a new round saw the last round's keys"
    second[2].set("gloo/address/0", b"new")
    assert [s.get("gloo/address/0") for s in second] == [b"new"] * WORLD


def test_stale_replies_of_a_dead_round_are_ignored(agent_store):
    one_round()
    # A round that died half-way: its rank 1 said hello and was welcomed into a space nobody uses now.
    agent_store.set(f"{D.HELLO}/1", b"dead-nonce")
    agent_store.set(f"{D.WELCOME}/1", b"dead-nonce stale-token")
    agent_store.set(f"{D.WELCOME}/2", b"dead-nonce stale-token")
    stores = one_round(rank0_late=1.0)  # the other ranks find only the stale replies at first
    stores[1].set("probe", b"1")
    assert stores[0].check(["probe"]) and stores[2].check(["probe"])
    assert not agent_store.check([f"{D.ROUND}/stale-token/probe"])


def test_env_rendezvous_without_the_agents_store(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    assert D.round_store(0, 2, TIMEOUT) is None  # rank 0 hosts a new store each round: env:// is safe


def test_a_missing_rank_times_out_with_a_clear_message(agent_store):
    with pytest.raises(TimeoutError, match="rank 0"):
        D.round_store(1, WORLD, datetime.timedelta(seconds=1))
