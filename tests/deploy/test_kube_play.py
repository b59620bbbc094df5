"""The pods the Kubernetes manifests describe, run for real: `kubectl kustomize`, then `podman kube play`.

- the dev overlay's serve Deployment (its image, command, env from the ConfigMap, the API token from a
  Secret, the /tmp volume, limits, the API and metrics ports published) answers /readyz, POST /v1/predict
  with a real PNG (401 without the token), and /metrics on its own port;
- pod 1 of 4 of the batch-predict Indexed Job (jobs/predict) reads an archive volume and writes its Parquet
  part, its errors part and its manifest to the results volume: its own shard's files, no other;
- pod 0 of the dev overlay's DDP Job (jobs/ddp), as a one-node job (NNODES=1), waits for its rendezvous
  name (init container), runs torchrun with the recipe ConfigMap and trains one epoch of a tiny dataset.

Jobs are not a kind podman plays: each runs as the pod the Job controller would make (tests/deploy/
kubeplay.py, `job_pod`). What podman skips or does differently, and what this does not prove, is in
docs/deploy.md ("The manifests' pods, run with podman"). The images are the session's builds (conftest.py).
Skips without podman, kubectl or root, except with CI=true, where it fails.
"""

from __future__ import annotations

import copy
import io
import json
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from tests.helpers import free_port

from . import kubeplay as K
from .conftest import CLASSES, REPO, make_dataset
from .podman import require_podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SUBNET, POD_IP = "10.250.8.0/24", "10.250.8.10"  # a network of this test's own, for the DDP pod's address


@pytest.fixture
def kube(tmp_path):
    require_podman()
    K.render("deploy/k8s/jobs/predict")  # skips (fails in CI) without kubectl
    k = K.Kube(tmp_path)
    try:
        yield k
    finally:
        k.close()


def _png(seed: int, size: int = 48) -> bytes:
    from PIL import Image

    img = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    img[..., 1] = 200
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait_ready(kube: K.Kube, url: str, container: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _request(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not ready after {timeout:.0f}s:\n{kube.logs(container)}")


def test_serve_deployment_pod_answers(kube, serve_image):
    docs = K.render("deploy/k8s/overlays/dev")
    dep = K.one(docs, "Deployment", "seedlings-serve")
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    spec = K.pod_spec(dep)
    (c,) = spec["containers"]
    # The Secret docs/deploy.md creates out of band (`kubectl create secret generic seedlings-serve-token`).
    token = uuid.uuid4().hex
    secrets = {"seedlings-serve-token": kube.secret("seedlings-serve-token", {"token": token})}
    # podman publishes hostPorts only: the Service's job here.
    ports = {"http": free_port(), "metrics": free_port()}
    for p in c["ports"]:
        p["hostPort"] = ports[p["name"]]
    K.set_images(dep, {"seedlings-serve": serve_image})
    used = [m["configMapRef"]["name"] for m in c.get("envFrom", [])]
    env = K.Env({n: configmaps[n]["data"] for n in used}, secrets)
    K.expand_commands(dep, env)
    (pod,) = kube.play([configmaps[n] for n in used] + [dep])
    assert pod == "seedlings-serve-pod-0"  # replicas: 1 in dev
    found = K.check_pod(kube, dep, pod, env)
    assert found["serve"]["Config"]["Env"].count(f"SEEDLINGS_API_TOKEN={token}") == 1

    base = f"http://127.0.0.1:{ports['http']}"
    _wait_ready(kube, f"{base}/readyz", f"{pod}-serve")
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + _png(0) + f"\r\n--{boundary}--\r\n".encode()
    form = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert _request(f"{base}/v1/predict", body, form)[0] == 401  # the Secret's token is required
    status, answer = _request(f"{base}/v1/predict", body, {**form, "Authorization": f"Bearer {token}"})
    assert status == 200, answer
    (pred,) = json.loads(answer)["predictions"]
    classes = json.loads((REPO / "src/seedlings/default_model/model.json").read_text())["classes"]
    assert pred["species"] in classes and 0 <= pred["confidence"] <= 1
    status, metrics = _request(f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert status == 200 and b"seedlings_http_requests_total" in metrics  # SEEDLINGS_METRICS_PORT took effect

    # The check is not vacuous: what podman would have skipped (an env var, a volume, a container, a limit) fails.
    for change in (_extra_env, _extra_mount, _extra_container, _other_limit):
        wrong = copy.deepcopy(dep)
        change(K.pod_spec(wrong))
        with pytest.raises(AssertionError):
            K.check_pod(kube, wrong, pod, env)


def _extra_env(spec: dict) -> None:
    spec["containers"][0]["env"].append({"name": "SEEDLINGS_NOT_THERE", "value": "1"})


def _extra_mount(spec: dict) -> None:
    spec["volumes"].append({"name": "cache", "emptyDir": {}})
    spec["containers"][0]["volumeMounts"].append({"name": "cache", "mountPath": "/var/cache/seedlings"})


def _extra_container(spec: dict) -> None:
    spec["containers"].append({**spec["containers"][0], "name": "sidecar"})


def _other_limit(spec: dict) -> None:
    spec["containers"][0]["resources"]["limits"]["memory"] = "2Gi"


def test_batch_predict_job_pod_writes_its_parquet_part(kube, train_image, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from seedlings.batch import parse_shard

    job = K.one(K.render("deploy/k8s/jobs/predict"), "Job", "seedlings-predict-archive")
    index, count = 1, job["spec"]["completions"]
    pod_doc = K.job_pod(job, index)
    (c,) = K.pod_spec(pod_doc)["containers"]
    archive, results = kube.volume("photo-archive"), kube.volume("seedlings-runs", owner=10001)
    names = [f"field-{f}/plot-{p}/img-{i}.png" for f in "ab" for p in range(3) for i in range(5)]
    shard = parse_shard(f"{index}/{count}")
    broken = next(n for n in (f"field-a/broken-{i}.png" for i in range(100)) if shard.holds(n))
    for i, name in enumerate([*names, broken]):
        (archive / name).parent.mkdir(parents=True, exist_ok=True)
        (archive / name).write_bytes(b"not a png" if name == broken else _png(i))
    K.set_images(pod_doc, {"seedlings-train": train_image})
    env = K.Env({}, {})
    K.expand_commands(pod_doc, env)
    (pod,) = kube.play([pod_doc])
    code = kube.wait(f"{pod}-predict", timeout=900)
    assert code == 0, kube.logs(f"{pod}-predict")
    found = K.check_pod(kube, pod_doc, pod, env)
    assert f"JOB_COMPLETION_INDEX={index}" in found["predict"]["Config"]["Env"]

    out = results / next(e["value"] for e in c["env"] if e["name"] == "RESULTS_NAME")
    tag = f"s{index}of{count}"
    assert json.loads((out / f"manifest-{tag}.json").read_text())  # the shard's manifest
    parts = sorted(out.glob(f"part-{tag}-*.parquet"))
    assert parts and not list(out.glob("part-s0of*")), sorted(p.name for p in out.iterdir())
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert sorted(r["file"] for r in rows) == sorted(n for n in names if shard.holds(n))
    classes = json.loads((REPO / "src/seedlings/default_model/model.json").read_text())["classes"]
    assert all(r["species"] in classes and r["model_name"] for r in rows)
    errors = [r for p in sorted(out.glob(f"errors-{tag}-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [e["file"] for e in errors] == [broken]


def test_ddp_job_pod_trains_one_epoch(kube, train_image, tmp_path):
    docs = K.render("deploy/k8s/overlays/dev/jobs")
    job = K.one(docs, "Job", "seedlings-ddp")
    pod_doc = K.job_pod(job, 0)
    spec = K.pod_spec(pod_doc)
    trainer = next(c for c in spec["containers"] if c["name"] == "trainer")
    # One node of one: what an overlay would patch by name. The rest of the command line is the manifest's.
    K.set_env(trainer, "NNODES", "1")
    # The headless Service's DNS record of pod 0, which the init container waits for and torchrun rendezvous at.
    (rdzv,) = [e["value"] for c in spec["initContainers"] for e in c["env"] if e["name"] == "RDZV_HOST"]
    spec["hostAliases"] = [{"ip": POD_IP, "hostnames": [rdzv]}]
    # The recipe ConfigMap, replaced as an overlay's configMapGenerator (behavior: replace) would: one short epoch.
    (recipe_volume,) = [v for v in spec["volumes"] if v["name"] == "recipe"]
    recipe = K.one(docs, "ConfigMap", recipe_volume["configMap"]["name"])
    recipe["data"] = {"train.yaml": "epochs: 1\nimage_size: 32\nbatch_size: 16\n"}
    data = kube.volume("dataset-plant-seedlings")
    make_dataset(data / "train", per_class=8, size=40)
    runs = kube.volume("seedlings-runs", owner=10001)
    K.set_images(pod_doc, {"seedlings-train": train_image})
    env = K.Env({recipe["metadata"]["name"]: recipe["data"]}, {})
    K.expand_commands(pod_doc, env)
    assert "--nnodes=1" in trainer["args"] and "--out=/runs/ddp-dev" in trainer["args"]
    network = kube.network(f"seedlings-kube-{uuid.uuid4().hex[:6]}", SUBNET)
    (pod,) = kube.play([recipe, pod_doc], "--network", network, "--ip", POD_IP)
    code = kube.wait(f"{pod}-trainer", timeout=1200)
    assert code == 0, kube.logs(f"{pod}-trainer")
    K.check_pod(kube, pod_doc, pod, env)

    run = runs / "ddp-dev"
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["training"]["world_size"] == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["world_size"] == 1
    assert (run / "model.json").stat().st_uid == 10001, "the pod wrote as root"
