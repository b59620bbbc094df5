"""The feedback loop on Kubernetes (docs/feedback-k8s.md): what the manifests promise, held without a cluster.

deploy/check.sh renders and schema-checks every folder; these tests hold what a schema cannot say: the serving pods
read the database URL from an optional Secret and the registry read-only, the CronJob's own script runs export →
train --init → export → promote in that order (run here with a stand-in `seedlings` that records its arguments),
and the example PostgreSQL admits exactly the pods that use it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from .conftest import REPO
from .kubeplay import render

sys.path.insert(0, str(REPO / "deploy"))
import check_manifests  # noqa: E402

LOOPS = ["dev-feedback-loop", "production-feedback-loop"]





def _get(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return doc


def _serve(docs: list[dict]) -> tuple[dict, dict, dict]:
    """The serve pod spec, its container and its settings (the ConfigMap it reads)."""
    pod = _get(docs, "Deployment", "seedlings-serve")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == c["envFrom"][0]["configMapRef"]["name"])
    return pod, c, config["data"]


def _loop_pod(docs: list[dict]) -> dict:
    return _get(docs, "CronJob", "seedlings-feedback-loop")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("overlay", ["dev", "production", *LOOPS])
def test_serve_reads_the_database_url_from_an_optional_secret(overlay):
    docs = render(f"deploy/k8s/overlays/{overlay}")
    pod, c, settings = _serve(docs)
    env = {e["name"]: e for e in c["env"]}
    ref = env["SEEDLINGS_FEEDBACK_DB"]["valueFrom"]["secretKeyRef"]
    # Without the Secret the pod starts with feedback off; the URL (with its password) never sits in the ConfigMap.
    assert (ref["name"], ref["key"], ref["optional"]) == ("seedlings-feedback-db", "url", True)
    assert "SEEDLINGS_FEEDBACK_DB" not in settings and "--feedback-db" not in " ".join(c.get("args", []))
    # The base policy allows DNS only; this one adds PostgreSQL's port for the same pods.
    policy = _get(docs, "NetworkPolicy", "seedlings-serve-feedback-db")
    serve_labels = _get(docs, "Deployment", "seedlings-serve")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], serve_labels) and policy["spec"]["policyTypes"] == ["Egress"]
    assert {"protocol": "TCP", "port": 5432} in policy["spec"]["egress"][0]["ports"]


@pytest.mark.parametrize("overlay", LOOPS)
def test_loop_overlays_serve_the_registry_read_only(overlay):
    docs = render(f"deploy/k8s/overlays/{overlay}")
    pod, c, settings = _serve(docs)
    assert settings["SEEDLINGS_MODEL_DIR"] == "/registry"
    if importlib.util.find_spec("pydantic_settings"):  # the serve extra: the value is the code's default, stated
        from seedlings.serving.settings import Settings

        assert float(settings["SEEDLINGS_REGISTRY_POLL_S"]) == Settings().registry_poll_s
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/registry"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True and volume["persistentVolumeClaim"] == {
        "claimName": "seedlings-registry", "readOnly": True}
    claim = _get(docs, "PersistentVolumeClaim", "seedlings-registry")
    assert claim["spec"]["accessModes"] == (["ReadWriteOnce"] if overlay.startswith("dev") else ["ReadWriteMany"])


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_plain_overlays_keep_the_model_in_the_image(overlay):
    pod, c, settings = _serve(render(f"deploy/k8s/overlays/{overlay}"))
    assert settings["SEEDLINGS_MODEL_DIR"] == "" and all("persistentVolumeClaim" not in v for v in pod["volumes"])


@pytest.mark.parametrize("overlay", LOOPS)
def test_loop_cronjob_writes_the_registry_and_reads_the_data(overlay):
    docs = render(f"deploy/k8s/overlays/{overlay}")
    cron = _get(docs, "CronJob", "seedlings-feedback-loop")
    job, pod = cron["spec"]["jobTemplate"]["spec"], _loop_pod(docs)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"].split()[-1] == "1"  # weekly
    assert job["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"  # a refusal is not retried by a new fine-tune
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    ref = env["SEEDLINGS_FEEDBACK_DB"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"], ref.get("optional", False)) == ("seedlings-feedback-db", "url", False)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    registry = mounts[env["REGISTRY"]["value"]]
    assert not registry.get("readOnly") and volumes[registry["name"]]["persistentVolumeClaim"] == {
        "claimName": "seedlings-registry"}
    data = mounts["/data/plant-seedlings"]
    assert data["readOnly"] and volumes[data["name"]]["persistentVolumeClaim"]["claimName"] == "dataset-plant-seedlings"
    for key in ("BASE_DATA", "FIXED_TEST"):
        assert env[key]["value"].startswith("/data/plant-seedlings/")
    assert "emptyDir" in volumes[mounts[env["WORK"]["value"]]["name"]]
    recipe = volumes[mounts[env["RECIPE"]["value"].rsplit("/", 1)[0]]["name"]]["configMap"]["name"]
    assert recipe == _get(docs, "ConfigMap", "seedlings-finetune-recipe")["metadata"]["name"]  # the hashed name
    assert c["image"] == {"dev-feedback-loop": "seedlings-train:dev",  # the train image: train + feedback extras
                          "production-feedback-loop": "registry.example.com/seedlings/train:0.1.0-cu128"}[overlay]
    init = _get(docs, "Job", "seedlings-registry-init")["spec"]["template"]["spec"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in init["volumes"] if "persistentVolumeClaim" in v} == {
        "seedlings-registry", "dataset-plant-seedlings"}


def _stand_in(tmp_path, body: str):
    """A `seedlings` that records its arguments (one line per call) and does what ``body`` says, and the real
    python3 (the scripts read the registry with seedlings' own code)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("seedlings", f'echo "$@" >> {tmp_path}/calls\n{body}'),
                       ("python3", f'exec {sys.executable} "$@"')):
        (bindir / name).write_text(f"#!/bin/bash\n{text}\n")
        (bindir / name).chmod(0o755)
    return bindir


def _run(container: dict, tmp_path, bindir, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    values = {e["name"]: e.get("value", "") for e in container["env"]}
    values.update(PATH=f"{bindir}:/usr/bin:/bin", HOME=str(tmp_path), **env)
    proc = subprocess.run([*container["command"], *container["args"]], env=values, capture_output=True, text=True,
                          timeout=120)
    calls = tmp_path / "calls"
    return proc, calls.read_text().splitlines() if calls.exists() else []


EXPORT = """if [ "$1 $2" = "feedback export" ]; then for d in $EXPORTED; do mkdir -p "$4/$d/Maize"; done; fi
if [ "$1" = promote ]; then exit "$PROMOTE_RC"; fi"""


@pytest.mark.parametrize(("exported", "promote_rc"), [("train test", 0), ("train", 0), ("", 0), ("train test", 1)])
def test_loop_script_runs_export_train_export_promote_in_order(tmp_path, exported, promote_rc):
    (c,) = _loop_pod(render("deploy/k8s/overlays/dev-feedback-loop"))["containers"]
    registry, work = tmp_path / "registry", tmp_path / "work"
    (registry / "2026.12.02.0331").mkdir(parents=True)
    (registry / "2026.12.02.0331" / "model.json").write_text("{}")
    (registry / "current.json").write_text(json.dumps({"version": "2026.12.02.0331"}))
    proc, calls = _run(c, tmp_path, _stand_in(tmp_path, EXPORT), REGISTRY=str(registry), WORK=str(work),
                       BASE_DATA="/base", FIXED_TEST="/fixed", RECIPE="/recipe.yaml", EXPORTED=exported,
                       PROMOTE_RC=str(promote_rc))
    assert proc.returncode == promote_rc, proc.stderr
    fb = work / "feedback"
    # No --db: the URL with its password comes from SEEDLINGS_FEEDBACK_DB, never from the command line (ps).
    assert calls[0] == f"feedback export --out {fb} --holdout 0.2"
    if not exported:  # no corrections yet: nothing to learn, a successful run
        assert len(calls) == 1 and "nothing to do" in proc.stdout
        return
    tests = "--test /fixed" + (f" --test {fb}/test" if "test" in exported else "")
    assert calls[1:] == [
        f"train --config /recipe.yaml --init {registry}/2026.12.02.0331 --data /base --data {fb}/train "
        f"--out {work}/run",
        f"export {work}/run --out {work}/candidate",
        f"promote {work}/candidate --registry {registry} {tests}",
    ]


@pytest.mark.parametrize("has_current", [False, True])
def test_registry_init_promotes_the_packaged_model_into_an_empty_registry_only(tmp_path, has_current):
    pytest.importorskip("numpy")
    from seedlings.inference import DEFAULT_MODEL_DIR

    (c,) = _get(render("deploy/k8s/overlays/production-feedback-loop"), "Job",
                "seedlings-registry-init")["spec"]["template"]["spec"]["containers"]
    registry = tmp_path / "registry"
    registry.mkdir()
    if has_current:  # applying the Job again must never bring the image's model back
        (registry / "current.json").write_text(json.dumps({"version": "2027.01.04.0300"}))
    proc, calls = _run(c, tmp_path, _stand_in(tmp_path, ""), REGISTRY=str(registry), FIXED_TEST="/fixed")
    assert proc.returncode == 0, proc.stderr
    assert calls == ([] if has_current else [f"promote {DEFAULT_MODEL_DIR} --registry {registry} --test /fixed"])


def test_postgres_example_admits_the_pods_that_use_it():
    docs = render("deploy/k8s/overlays/dev-feedback-loop")
    sts = _get(docs, "StatefulSet", "seedlings-postgres")
    service = _get(docs, "Service", sts["spec"]["serviceName"])
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert service["spec"]["clusterIP"] == "None" and c["image"].startswith("postgres:")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {m["name"] for m in c["volumeMounts"]}
    assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready" and c["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in c["env"]}
    server = _get(docs, "Secret", env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"])
    url = _get(docs, "Secret", "seedlings-feedback-db")["stringData"]["url"]
    password = server["stringData"]["password"]
    assert "example" in password  # marked: this one is in git
    assert url == (f"postgresql+psycopg://{env['POSTGRES_USER']['value']}:{password}@{service['metadata']['name']}:5432/"
                   f"{env['POSTGRES_DB']['value']}")
    policy = _get(docs, "NetworkPolicy", "seedlings-postgres")
    assert _selects(policy["spec"]["podSelector"], sts["spec"]["template"]["metadata"]["labels"])
    (rule,) = policy["spec"]["ingress"]
    clients = [_get(docs, "Deployment", "seedlings-serve")["spec"]["template"]["metadata"]["labels"],
               _get(docs, "CronJob", "seedlings-feedback-loop")["spec"]["jobTemplate"]["spec"]["template"]
               ["metadata"]["labels"]]
    for labels in clients:
        assert any(_selects(peer["podSelector"], labels) for peer in rule["from"]), labels
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}] and "Egress" in policy["spec"]["policyTypes"]


def test_cronjob_pods_follow_our_rules():
    """check_manifests.py looks into a CronJob's pod template like a Job's."""
    cron = _get(render("deploy/k8s/jobs/feedback-loop"), "CronJob", "seedlings-feedback-loop")
    assert check_manifests.check_doc(cron, "t") == []
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
    assert "may run as root" in "\n".join(check_manifests.check_doc(cron, "t"))
