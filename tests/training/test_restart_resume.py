"""A torchrun restart resumes on every process, even where this node's restart count is still 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import free_port, make_dataset

TRAIN = ("from seedlings.training.fit import train; "
         "train(data={data!r}, out={out!r}, epochs=2, image_size=24, batch_size=16, threads=1, progress=False)")


def test_a_restarted_process_on_another_node_makes_every_process_resume(tmp_path):
    from seedlings.training.fit import train

    data, out = make_dataset(tmp_path / "data", per_class=8), tmp_path / "run"
    train(data=str(data), out=str(out), epochs=1, image_size=24, batch_size=16, threads=1, progress=False)
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
        env.pop("TORCHELASTIC_RESTART_COUNT", None)
        if rank == 1:  # its node's agent restarted it; rank 0 runs on a replacement node, count 0
            env["TORCHELASTIC_RESTART_COUNT"] = "1"
        procs.append(subprocess.Popen([sys.executable, "-c", TRAIN.format(data=str(data), out=str(out))],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-3000:]
    assert "resumed" in logs[0] and "already holds a run" not in logs[0]
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
