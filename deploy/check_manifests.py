"""Checks on rendered manifests that kubernetes-validate cannot make.

- custom kinds: the PyTorchJob against the vendored Kubeflow schema (kubernetes-validate skips
  kinds it has no schema for); an InferenceService is checked for the fields we rely on;
  any other unknown kind fails, so a typo in a kind is not silently skipped;
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

import json
import re
import sys
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).resolve().parent / "k8s" / "schemas"
BUILTIN_GROUPS = ("v1", "apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.")
POD_PATHS = ("Deployment", "Job", "StatefulSet", "DaemonSet")


def pytorchjob_validator():
    from jsonschema import Draft202012Validator

    schema = json.loads((SCHEMAS / "pytorchjob-kubeflow-v1.json").read_text())
    return Draft202012Validator(schema)


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """Pod templates of a workload; tolerant of malformed documents, which the schemas report."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind in POD_PATHS:
        return [("", spec.get("template") or {})]
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


def check_doc(doc: dict, where: str, pytorchjob) -> list[str]:
    kind, api = doc.get("kind"), doc.get("apiVersion", "")
    name = f"{where}: {kind}/{doc.get('metadata', {}).get('name', '?')}"
    problems = []
    if kind == "PyTorchJob":
        for err in sorted(pytorchjob.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in err.absolute_path) or "(top)"
            problems.append(f"{path}: {err.message[:300]}")
    elif kind == "InferenceService":
        containers = doc.get("spec", {}).get("predictor", {}).get("containers", [])
        if api != "serving.kserve.io/v1beta1" or len(containers) != 1:
            problems.append("expected serving.kserve.io/v1beta1 with exactly one predictor container")
    elif not api.startswith(BUILTIN_GROUPS):
        problems.append(f"unknown kind {api} {kind}: add a schema for it to deploy/check_manifests.py")
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
    validator, problems, count = pytorchjob_validator(), [], 0
    for path in paths:
        if Path(path).name == "kustomization.yaml":
            problems += index_patch_problems(Path(path))
            continue
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc:
                count += 1
                problems += check_doc(doc, Path(path).name, validator)
    for p in problems:
        print(f"check_manifests: {p}", file=sys.stderr)
    print(f"check_manifests: {count} objects in {len(paths)} file(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
