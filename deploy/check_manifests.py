"""Checks on rendered manifests that kubernetes-validate cannot make.

- custom kinds against the vendored schemas in k8s/schemas (kubernetes-validate skips kinds it has no
  schema for): Kubeflow's PyTorchJob, Knative's Service, KServe's InferenceService; any other unknown
  kind fails, so a typo in a kind is not silently skipped;
- what Knative's admission webhook refuses and a schema cannot say (a Knative Service, and an
  InferenceService in serverless mode, which KServe turns into one): fields behind feature flags that a
  default install disables (pod securityContext, fieldRef, volumes other than emptyDir/configMap/secret…),
  more than one port, a probe on another port, failureThreshold/timeoutSeconds with Knative's default
  readiness probing (periodSeconds 0);
- our own rules, learnt the hard way: every container names an image (a strategic-merge patch
  with a wrong container name adds an image-less container and still validates), runs as non-root,
  drops all capabilities and cannot escalate;
- kustomizations patch by name, never by list position: a JSON patch path such as
  `/spec/template/spec/containers/0/env/3/value` silently patches another entry once the base's
  list is reordered (use a strategic-merge patch, which matches containers and env by name).

Usage: python deploy/check_manifests.py RENDERED.yaml... [path/to/kustomization.yaml...]
(exit 1 and one line per problem)
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).resolve().parent / "k8s" / "schemas"
BUILTIN_GROUPS = ("v1", "apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.")
POD_PATHS = ("Deployment", "Job", "StatefulSet", "DaemonSet")
# (apiVersion, kind) → vendored schema (generated: k8s/schemas/generate_*.py)
CUSTOM = {
    ("kubeflow.org/v1", "PyTorchJob"): "pytorchjob-kubeflow-v1.json",
    ("serving.knative.dev/v1", "Service"): "service-knative-serving-v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-kserve-v1beta1.json",
}
KNATIVE = ("serving.knative.dev/v1", "Service")
KSERVE_MODE = "serving.kserve.io/deploymentMode"
KSERVE_MODES = ("RawDeployment", "Standard", "Serverless", "Knative")  # the last of each pair: KServe >= 0.16
# Knative's config-features that a default install leaves disabled (knative-v1.23.0): the CRD schema lists
# these fields, the webhook refuses them.
KNATIVE_POD_FLAGGED = ("securityContext", "affinity", "nodeSelector", "tolerations", "topologySpreadConstraints",
                       "initContainers", "hostAliases", "dnsPolicy", "dnsConfig", "runtimeClassName",
                       "priorityClassName", "schedulerName", "hostNetwork", "hostPID", "hostIPC",
                       "shareProcessNamespace")
KNATIVE_VOLUMES = ("emptyDir", "configMap", "secret", "projected")


@functools.cache
def validator(api: str, kind: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads((SCHEMAS / CUSTOM[(api, kind)]).read_text()))


def pytorchjob_validator():
    return validator("kubeflow.org/v1", "PyTorchJob")


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """Pod templates of a workload; tolerant of malformed documents, which the schemas report."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if (doc.get("apiVersion"), kind) == KNATIVE:
        return [("template: ", spec.get("template") or {})]
    if kind in POD_PATHS:
        return [("", spec.get("template") or {})]
    if kind == "CronJob":  # the pod template of the Job it creates
        return [("", ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})]
    if kind == "PyTorchJob":
        return [
            (f"{role}: ", replica.get("template") or {})
            for role, replica in (spec.get("pytorchReplicaSpecs") or {}).items()
            if isinstance(replica, dict)
        ]
    if kind == "InferenceService":
        return [("predictor: ", {"spec": spec.get("predictor") or {}})]
    return []


def container_problems(template: dict) -> list[str]:
    spec = template.get("spec", {})
    pod_sc = spec.get("securityContext", {})
    problems = []
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        sc, name = c.get("securityContext", {}), c.get("name", "?")
        if not c.get("image"):
            problems.append(
                f"container {name} has no image (a patch naming a container that does not exist?)"
            )
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"container {name} may run as root: set securityContext.runAsNonRoot")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"container {name} keeps Linux capabilities: drop [ALL]")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: set allowPrivilegeEscalation: false")
    return problems


def knative_problems(pod: dict) -> list[str]:
    """What Knative's webhook refuses in a revision's pod spec with the default feature flags."""
    problems = [f"{f}: behind a Knative feature flag that a default install disables"
                for f in KNATIVE_POD_FLAGGED if f in pod]
    for v in pod.get("volumes", []):
        kinds = [k for k in v if k != "name"]
        if not set(kinds) <= set(KNATIVE_VOLUMES):
            problems.append(f"volume {v.get('name')}: {', '.join(kinds)} is behind a Knative feature flag")
    ported = [c for c in pod.get("containers", []) if c.get("ports")]
    if len(ported) > 1 or any(len(c["ports"]) > 1 for c in ported):
        problems.append("Knative routes one port of one container: declare only that one")
    for c in pod.get("containers", []):
        problems += [f"container {c.get('name', '?')}: {p}" for p in knative_container_problems(c)]
    return problems


def knative_container_problems(c: dict) -> list[str]:
    problems = [f"env {e.get('name')}: fieldRef/resourceFieldRef is behind Knative's kubernetes.podspec-fieldref flag"
                for e in c.get("env", []) if {"fieldRef", "resourceFieldRef"} & set(e.get("valueFrom") or {})]
    if (c.get("securityContext") or {}).get("capabilities", {}).get("add"):
        problems.append("capabilities.add is behind a Knative feature flag")
    port = (c.get("ports") or [{}])[0].get("name")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = c.get(probe_name) or {}
        named = [(probe.get(h) or {}).get("port") for h in ("httpGet", "tcpSocket")]
        problems += [f"{probe_name} port {p} is not the container port" for p in named
                     if isinstance(p, str) and p != port]
    ready = c.get("readinessProbe") or {}
    if ready and not ready.get("periodSeconds") and ({"failureThreshold", "timeoutSeconds"} & set(ready)):
        problems.append("readinessProbe without periodSeconds (Knative's fast probing) allows no "
                        "failureThreshold or timeoutSeconds")
    return problems


def schema_problems(doc: dict, api: str, kind: str) -> list[str]:
    problems = []
    for err in sorted(validator(api, kind).iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(top)"
        problems.append(f"{path}: {err.message[:300]}")
    return problems


def check_doc(doc: dict, where: str, _unused=None) -> list[str]:
    kind, api = doc.get("kind"), doc.get("apiVersion", "")
    name = f"{where}: {kind}/{doc.get('metadata', {}).get('name', '?')}"
    problems = []
    if (api, kind) in CUSTOM:
        problems += schema_problems(doc, api, kind)
    elif not api.startswith(BUILTIN_GROUPS) or "knative.dev" in api or "kserve.io" in api:
        problems.append(f"unknown kind {api} {kind}: add a schema for it to deploy/check_manifests.py")
    if (api, kind) == KNATIVE:
        problems += knative_problems((doc.get("spec", {}).get("template") or {}).get("spec") or {})
    if kind == "InferenceService":
        mode = (doc.get("metadata", {}).get("annotations") or {}).get(KSERVE_MODE, "Serverless")
        if mode not in KSERVE_MODES:
            problems.append(f"{KSERVE_MODE}: {mode!r} is none of {', '.join(KSERVE_MODES)}")
        if mode in ("Serverless", "Knative"):  # KServe makes a Knative Service of the predictor
            problems += ["predictor: " + p for p in knative_problems(doc.get("spec", {}).get("predictor") or {})]
    for role, template in pod_templates(doc):
        problems += [role + p for p in container_problems(template)]
    return [f"{name}: {p}" for p in problems]


LIST_INDEX = re.compile(r"/(\d+|-)(/|$)")


def json_patch_ops(patch: dict, base: Path) -> list[dict]:
    """The JSON 6902 operations of one `patches` entry (inline or in a file); [] for a strategic merge."""
    text = patch.get("patch")
    if text is None and patch.get("path"):
        text = (base / patch["path"]).read_text()
    ops = yaml.safe_load(text) if text else None
    return [op for op in ops if isinstance(op, dict)] if isinstance(ops, list) else []


def index_patch_problems(kustomization: Path) -> list[str]:
    """JSON patch paths that address a list entry by its position instead of its name."""
    doc = yaml.safe_load(kustomization.read_text()) or {}
    problems = []
    for patch in (doc.get("patches") or []) + (doc.get("patchesJson6902") or []):
        for op in json_patch_ops(patch, kustomization.parent):
            if LIST_INDEX.search(str(op.get("path", ""))):
                problems.append(f"{kustomization}: patch path {op['path']} picks a list entry by position; "
                                "patch it by name (a strategic-merge patch)")
    return problems


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    problems, count = [], 0
    for path in paths:
        if Path(path).name == "kustomization.yaml":
            problems += index_patch_problems(Path(path))
            continue
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc:
                count += 1
                problems += check_doc(doc, Path(path).name)
    for p in problems:
        print(f"check_manifests: {p}", file=sys.stderr)
    print(f"check_manifests: {count} objects in {len(paths)} file(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
