"""Write the JSON schema of Kubeflow's PyTorchJob (kubeflow.org/v1) that deploy/check.sh validates against.

Why generated: kubernetes-validate skips custom kinds, and no registry we can reach ships the CRD itself.
The Training Operator's Python SDK (PyPI `kubeflow-training`) is generated from the same OpenAPI
schema as the CRD, so its models list every field, its type, its description and which fields are
required. Pod templates, object metadata and metric specs come from kubernetes-validate's bundled
Kubernetes schemas, inlined so the result is one self-contained file. Unknown fields are rejected
(like `kubectl apply --validate=strict`), so a misspelled key fails the check instead of being pruned.

Regenerate (no install needed; the SDK's models are read as text, never imported):

    pip download --no-deps kubeflow-training==1.9.4 -d /tmp/kft
    .venv/bin/python deploy/k8s/schemas/generate_pytorchjob_schema.py /tmp/kft/kubeflow_training-1.9.4-*.whl
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "pytorchjob-kubeflow-v1.json"
MODELS = "kubeflow/training/models/"
K8S_VERSION = "v1.37.0-local-strict"
# Kubernetes types the SDK names after the Python client, mapped to their OpenAPI definitions.
K8S_TYPES = {
    "V1PodTemplateSpec": "io.k8s.api.core.v1.PodTemplateSpec",
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "K8sIoApiAutoscalingV2MetricSpec": "io.k8s.api.autoscaling.v2.MetricSpec",
    "Quantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
}
# Enumerations the CRD documents in prose (the SDK keeps them as plain strings).
ENUMS = {
    ("KubeflowOrgV1ReplicaSpec", "restartPolicy"): ["Always", "OnFailure", "Never", "ExitCode"],
    ("KubeflowOrgV1RunPolicy", "cleanPodPolicy"): ["All", "Running", "None"],
    ("KubeflowOrgV1ElasticPolicy", "rdzvBackend"): ["c10d", "etcd", "etcd-v2"],
}
SCALARS = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "float": {"type": "number"},
    "object": {},
}


def read_models(wheel: Path) -> dict[str, dict]:
    """Class name → {fields: {json name: (type, description)}, required: [names]} from the SDK sources."""
    models = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(MODELS + "kubeflow_org_v1_") and name.endswith(".py"):
                models.update(parse_model(zf.read(name).decode()))
    if "KubeflowOrgV1PyTorchJob" not in models:
        sys.exit(f"{wheel}: no KubeflowOrgV1PyTorchJob model inside; is this the kubeflow-training wheel?")
    return models


def parse_model(source: str) -> dict[str, dict]:
    tree = ast.parse(source)
    out = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        assigns = {
            t.id: n.value
            for n in cls.body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        types, names = ast.literal_eval(assigns["openapi_types"]), ast.literal_eval(assigns["attribute_map"])
        docs, required = {}, []
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in types):
            text = ast.get_docstring(fn) or ""
            if any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                docs[fn.name] = _description(text)
            elif "must not be `None`" in ast.get_source_segment(source, fn):
                required.append(names[fn.name])
        out[cls.name] = {
            "fields": {names[k]: (t, docs.get(k, "")) for k, t in types.items()},
            "required": sorted(required),
        }
    return out


def _description(doc: str) -> str:
    lines = [ln for ln in doc.splitlines()[1:] if ln.strip() and not ln.strip().startswith(":")]
    return re.sub(r"\s*# noqa: E501", "", " ".join(ln.strip() for ln in lines)).strip()


def type_schema(t: str) -> dict:
    if t in SCALARS:
        return dict(SCALARS[t])
    if t.startswith("list["):
        return {"type": "array", "items": type_schema(t[5:-1])}
    if t.startswith("dict(str, "):
        return {"type": "object", "additionalProperties": type_schema(t[len("dict(str, ") : -1])}
    if t in K8S_TYPES:
        return {"$ref": f"#/$defs/{K8S_TYPES[t]}"}
    return {"$ref": f"#/$defs/{t}"}


def model_schema(name: str, model: dict) -> dict:
    props = {}
    for field, (t, doc) in model["fields"].items():
        props[field] = type_schema(t)
        if doc:
            props[field]["description"] = doc
        if (name, field) in ENUMS:
            props[field]["enum"] = ENUMS[(name, field)]
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    if model["required"]:
        schema["required"] = model["required"]
    return schema


def kubernetes_defs(roots: list[str] | None = None) -> dict:
    """The Kubernetes definitions reachable from ``roots`` (default: the types the SDK uses), from
    kubernetes-validate's bundled schemas; generate_crd_schemas.py uses it too."""
    import kubernetes_validate

    path = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / K8S_VERSION
        / "_definitions.json"
    )
    all_defs = json.loads(path.read_text())["$defs"]
    todo, seen = list(K8S_TYPES.values() if roots is None else roots), {}
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen[key] = all_defs[key]
        todo += [m for m in re.findall(r'"#/\$defs/([^"]+)"', json.dumps(all_defs[key])) if m not in seen]
    return dict(sorted(seen.items()))


def build(wheel: Path) -> dict:
    models = read_models(wheel)
    defs = {name: model_schema(name, m) for name, m in sorted(models.items())}
    job = defs.pop("KubeflowOrgV1PyTorchJob")
    # The operator knows two replica types; any other key is silently ignored by it, so reject it here.
    defs["KubeflowOrgV1PyTorchJobSpec"]["properties"]["pytorchReplicaSpecs"]["propertyNames"] = {
        "enum": ["Master", "Worker"]
    }
    job["properties"]["apiVersion"] = {"const": "kubeflow.org/v1"}
    job["properties"]["kind"] = {"const": "PyTorchJob"}
    job["properties"]["status"] = {"type": "object"}  # written by the operator, never by us
    job["required"] = ["apiVersion", "kind", "metadata", "spec"]
    version = re.search(r"kubeflow_training-([^-]+)-", wheel.name)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://seedlings.invalid/schemas/pytorchjob-kubeflow-v1.json",
        "title": "PyTorchJob (kubeflow.org/v1)",
        "description": f"Generated by {Path(__file__).name} from kubeflow-training "
        f"{version.group(1) if version else '?'} and Kubernetes {K8S_VERSION}; do not edit.",
        **job,
        "$defs": {**defs, **kubernetes_defs()},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print(__doc__, file=sys.stderr)
        return 2
    OUT.write_text(json.dumps(build(Path(argv[0])), indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
