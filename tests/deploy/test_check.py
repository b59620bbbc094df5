"""deploy/check.sh: every overlay renders and validates; the manifest checker catches what it claims to."""

from __future__ import annotations

import dataclasses
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
    (job,) = [d for d in _render("deploy/k8s/jobs/pytorchjob") if d["kind"] == "PyTorchJob"]
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
    ref = env["SEEDLINGS_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is (not required)
    assert (ref["name"], ref["key"]) == ("seedlings-serve-token", "token")  # the Secret docs/deploy.md creates


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


# ---------------------------------------------------------------- the training recipe (issues 14 and 15)

RECIPE = "/etc/seedlings/recipe/train.yaml"
TRAINING_JOBS = ["overlays/dev/jobs", "overlays/production/jobs", "jobs/pytorchjob"]


def _pod_specs(doc: dict) -> list[dict]:
    return [t.get("spec", {}) for _, t in check_manifests.pod_templates(doc)]


def _recipe_map(docs: list[dict]) -> dict:
    (config,) = [d for d in docs
                 if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("seedlings-train-recipe")]
    return config


def _train_containers(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(pod spec, container) of every container that runs `seedlings train`."""
    return [(spec, c) for d in docs for spec in _pod_specs(d) for c in spec.get("containers", [])
            if "train" in c.get("args", []) and "seedlings" in c.get("args", [])]


@pytest.mark.parametrize("path", TRAINING_JOBS)
def test_training_jobs_take_the_recipe_from_the_configmap(path):
    """No recipe flag on a Job's command line: only where the data and the run live, and --config."""
    pytest.importorskip("torch")  # seedlings.config validates backbone names through models/
    from seedlings.config import TrainConfig

    docs = _render(f"deploy/k8s/{path}")
    recipe, found = _recipe_map(docs), _train_containers(docs)
    assert found, f"no `seedlings train` container in {path}"
    settings = {f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)} - {"data", "out"}
    for spec, c in found:
        flags = {a.split("=")[0].removeprefix("--") for a in c["args"][c["args"].index("train") + 1:]}
        assert f"--config={RECIPE}" in c["args"]
        assert not flags & settings, f"{c['name']} sets {flags & settings} on its command line"
        mount = next(m for m in c["volumeMounts"] if RECIPE.startswith(m["mountPath"] + "/"))
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == recipe["metadata"]["name"]  # the hashed name reached the pod
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SEEDLINGS_CACHE_DIR"].startswith("/tmp/")  # the pod's emptyDir: weights converted there


def _resolve(tmp_path, text: str):
    pytest.importorskip("torch")
    from seedlings.config import resolve

    path = tmp_path / "train.yaml"
    path.write_text(text)
    return resolve(str(path), {"data": "/data", "out": "/runs/x"})


def test_base_recipe_is_the_documented_one_and_pretrained_selects_finetuning(tmp_path):
    pytest.importorskip("torch")
    from seedlings.config import FINETUNE, TrainConfig

    text = _recipe_map(_render("deploy/k8s/overlays/production/jobs"))["data"]["train.yaml"]
    cfg = _resolve(tmp_path, text)
    assert (cfg.model, cfg.image_size, cfg.epochs, cfg.pretrained) == (
        TrainConfig.model, TrainConfig.image_size, TrainConfig.epochs, False)
    assert "# pretrained: true" in text  # the documented switch
    tuned = _resolve(tmp_path, text.replace("# pretrained: true", "pretrained: true")).to_dict()
    assert tuned["pretrained"] and {k: tuned[k] for k in FINETUNE} == FINETUNE


def _run_prepare_script(tmp_path, recipe_text: str) -> str:
    """Run the prepare Job's own script with a stand-in `seedlings` that records its arguments."""
    docs = _render("deploy/k8s/overlays/dev/jobs")
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].startswith("seedlings-prepare"))
    (c,) = job["spec"]["template"]["spec"]["containers"]
    bindir, data = tmp_path / "bin", tmp_path / "data"
    (data / "train").mkdir(parents=True)
    bindir.mkdir()
    for name, body in (("seedlings", f'echo "$@" >> {tmp_path}/calls'), ("python3", f'exec {sys.executable} "$@"')):
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    (tmp_path / "train.yaml").write_text(recipe_text)
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    env.update(DATASET_DIR=str(data), RECIPE=str(tmp_path / "train.yaml"),
               PATH=f"{bindir}:/usr/bin:/bin", HOME=str(tmp_path))
    proc = subprocess.run([*c["command"], *c["args"]], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / "calls").read_text()


@pytest.mark.parametrize(("recipe", "size"), [("{}", None), ("pretrained: true", 160), ("image_size: 96", 96)])
def test_prepare_job_prepares_at_the_recipes_size(tmp_path, recipe, size):
    pytest.importorskip("torch")
    from seedlings.config import TrainConfig

    calls = _run_prepare_script(tmp_path, recipe)
    assert f"--image-size {size or TrainConfig.image_size} " in calls.splitlines()[-1]


def test_index_patches_are_refused(tmp_path):
    k = tmp_path / "kustomization.yaml"
    k.write_text(yaml.safe_dump({"patches": [
        {"target": {"kind": "Job"}, "patch": "- op: replace\n  path: /spec/template/spec/containers/0/env/3/value\n"
                                             "  value: '64'\n"},
        {"target": {"kind": "Job"}, "patch": "- op: replace\n  path: /spec/completions\n  value: 3\n"},
        {"path": "smp.yaml"}]}))
    (tmp_path / "smp.yaml").write_text("apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n")
    (problem,) = check_manifests.index_patch_problems(k)
    assert "/containers/0/env/3/value" in problem and "by name" in problem
    assert check_manifests.main([str(k)]) == 1


@pytest.mark.parametrize("experiments", ["jobs/sweep/experiments.yaml", "overlays/dev/jobs/experiments.yaml"])
def test_sweep_trains_what_train_would(experiments):
    """sweep-item's config of each experiment equals `seedlings train`'s for the same settings (recipe included)."""
    pytest.importorskip("torch")
    from seedlings.config import FINETUNE, resolve
    from seedlings.runs import experiment_overrides, load_experiment, sweep_config

    path = str(REPO / "deploy" / "k8s" / experiments)
    n = len(yaml.safe_load(open(path))["experiments"])
    for i in range(n):
        overrides = experiment_overrides(load_experiment(path, i), "/runs", "/data")
        swept = sweep_config(dict(overrides), f"{path}[{i}]")  # what runs.sweep_item trains
        assert swept.to_dict() == resolve(None, overrides).to_dict(), f"experiment {i} of {experiments}"
        if overrides.get("pretrained"):
            assert (swept.model, swept.epochs) == (FINETUNE["model"], FINETUNE["epochs"])


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_sweep_job_runs_every_experiment(overlay):
    docs = _render(f"deploy/k8s/overlays/{overlay}/jobs")
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "seedlings-sweep")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("seedlings-sweep"))
    n = len(yaml.safe_load(config["data"]["experiments.yaml"])["experiments"])
    assert job["spec"]["completions"] == job["spec"]["maxFailedIndexes"] == n


def _dockerfile_stages() -> dict[str, str]:
    text = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    parts = text.split("\nFROM ")[1:]
    return {p.split("\n", 1)[0].split(" AS ")[-1].strip(): p for p in parts}


def test_serve_image_exposes_the_metrics_port():
    stages = _dockerfile_stages()
    _, config, _ = _serve_docs("production")
    expose = next(line for line in stages["serve"].splitlines() if line.startswith("EXPOSE"))
    assert {"8000", config["data"]["SEEDLINGS_METRICS_PORT"]} <= set(expose.split()[1:])


def test_train_image_ships_the_imagenet_weights():
    """The train target installs the train extra, which pins every weights package --pretrained verifies."""
    import tomllib

    pytest.importorskip("torch")
    from seedlings.models.pretrained import WEIGHTS

    stages = _dockerfile_stages()
    assert "requirements.py train batch " in stages["requirements"]  # train and batch-predict Jobs
    assert "train.txt" in stages["train-deps"] and stages["train"].startswith("train-deps AS train")
    assert "sha256_file(package_file(e))" in stages["train"]  # the build fails on a missing or altered file
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    for entry in WEIGHTS.values():
        assert f"{entry.package}=={entry.version}" in extra


# ---------------------------------------------------------------- serverless (issue 24)


def _one(path: str, kind: str) -> dict:
    (doc,) = [d for d in _render(path) if d["kind"] == kind]
    return doc


def test_serverless_manifests_scale_to_zero_at_the_measured_concurrency():
    ksvc = _one("deploy/k8s/examples/knative", "Service")
    isvc = _one("deploy/k8s/examples/kserve-serverless", "InferenceService")
    raw = _one("deploy/k8s/examples/kserve", "InferenceService")
    assert ksvc["apiVersion"] == "serving.knative.dev/v1"
    annotations, pod = ksvc["spec"]["template"]["metadata"]["annotations"], ksvc["spec"]["template"]["spec"]
    predictor = isvc["spec"]["predictor"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0" and predictor["minReplicas"] == 0
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency" == predictor["scaleMetric"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # One figure for both: the concurrency the service was measured best at (docs/serving.md), where its
    # micro-batches fill; the hard limit leaves Knative room to queue beyond it.
    target = int(annotations["autoscaling.knative.dev/target"])
    assert target == predictor["scaleTarget"] == int(env["SEEDLINGS_MAX_BATCH"]) == 16
    assert pod["containerConcurrency"] == predictor["containerConcurrency"] > target
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "SEEDLINGS_MODEL_DIR" not in env and all("emptyDir" in v for v in pod["volumes"])  # model in the image
    assert env["SEEDLINGS_THREADS"] == str(c["resources"]["limits"]["cpu"])
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert raw["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_custom_schemas_and_knative_rules_reject_mistakes():
    ksvc = _one("deploy/k8s/examples/knative", "Service")
    isvc = _one("deploy/k8s/examples/kserve-serverless", "InferenceService")
    assert check_manifests.check_doc(ksvc, "t") == check_manifests.check_doc(isvc, "t") == []
    pod = ksvc["spec"]["template"]["spec"]
    pod["containerConcurency"] = 3  # misspelled
    pod["securityContext"] = {"runAsNonRoot": True}  # behind a feature flag
    pod["containers"][0]["env"].append({"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}})
    pod["containers"][0]["readinessProbe"]["failureThreshold"] = 3
    pod["containers"][0]["ports"].append({"containerPort": 9100})
    problems = "\n".join(check_manifests.check_doc(ksvc, "t"))
    for needle in ("containerConcurency", "securityContext: behind", "env X", "failureThreshold", "one port"):
        assert needle in problems
    isvc["spec"]["predictor"]["scaleMetric"] = "gpu"
    isvc["spec"]["predictor"]["minReplica"] = 0
    isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverles"
    problems = "\n".join(check_manifests.check_doc(isvc, "t"))
    for needle in ("'gpu' is not one of", "minReplica", "Serverles"):
        assert needle in problems
