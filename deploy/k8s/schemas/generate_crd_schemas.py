"""Write JSON schemas of custom resources from their CustomResourceDefinitions, for deploy/check.sh.

Why: kubernetes-validate skips custom kinds, so a misspelled key in a Knative Service or a KServe
InferenceService would pass the checks and then be refused (or silently pruned) by the cluster. The CRD's
`openAPIV3Schema` is the API server's own validation; this turns it into a self-contained JSON schema:

- unknown fields are errors (additionalProperties: false), as with `kubectl apply --validate=strict`,
  except where the CRD keeps unknown fields (x-kubernetes-preserve-unknown-fields);
- `nullable` and `x-kubernetes-int-or-string` become JSON Schema types; descriptions are dropped (size);
- the object's `metadata` is Kubernetes' ObjectMeta from kubernetes-validate's bundled schemas (the CRD
  says only "object": the API server checks metadata itself);
- repeated subtrees (KServe embeds a whole container spec in every predictor framework) are written once
  under `$defs`, which takes KServe's 2 MB CRD to a few hundred KB.

Regenerate (the CRDs of the releases named below, read from the projects' repositories):

    curl -sLo /tmp/ksvc.yaml https://raw.githubusercontent.com/knative/serving/knative-v1.23.0/config/core/300-resources/service.yaml
    curl -sLo /tmp/isvc.yaml https://raw.githubusercontent.com/kserve/kserve/v0.20.0/config/crd/full/serving.kserve.io_inferenceservices.yaml
    .venv/bin/python deploy/k8s/schemas/generate_crd_schemas.py \\
        /tmp/ksvc.yaml=knative/serving@knative-v1.23.0 /tmp/isvc.yaml=kserve/kserve@v0.20.0

Each CRD becomes one file here, named by kind, project and version like pytorchjob-kubeflow-v1.json
(OUTPUTS): service-knative-serving-v1.json, inferenceservice-kserve-v1beta1.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml
from generate_pytorchjob_schema import K8S_VERSION, kubernetes_defs  # the same Kubernetes definitions

HERE = Path(__file__).resolve().parent
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# (group, kind) → output file. Named like pytorchjob-kubeflow-v1.json: kind, project, version.
OUTPUTS = {
    ("serving.knative.dev", "Service"): "service-knative-serving-v1.json",
    ("serving.kserve.io", "InferenceService"): "inferenceservice-kserve-v1beta1.json",
}
DEDUP_MIN_CHARS = 400  # a subtree at least this long, seen twice or more, goes to $defs


def strict(node):
    """The OpenAPI v3 structural schema `node` as JSON Schema, unknown fields refused."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "description" or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        else:
            out[key] = strict(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    opened = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not opened:
        out["additionalProperties"] = False
    return out


MAPPINGS = ("properties", "patternProperties")  # name → schema: their values are schemas, they are not
SUBSCHEMAS = ("items", "additionalProperties", "not")


def children(node: dict, is_schema: bool):
    """(key, name or None, child, whether the child is a schema) of a dict in the schema tree."""
    for key, value in node.items():
        if is_schema and key in MAPPINGS:
            for name, sub in value.items():
                yield key, name, sub, True
        else:
            yield key, None, value, is_schema and key in SUBSCHEMAS


class Dedup:
    """Every large schema that occurs more than once, moved into $defs and referred to from where it was."""

    def __init__(self, schema: dict, prefix: str):
        self.prefix, self.counts, self.names, self.defs = prefix, {}, {}, {}
        self.count(schema)
        self.schema = self.replace(schema, top=True)

    def count(self, node, is_schema=True) -> None:
        if isinstance(node, list):
            for v in node:
                self.count(v, is_schema)
        elif isinstance(node, dict):
            text = json.dumps(node, sort_keys=True)
            if is_schema and len(text) >= DEDUP_MIN_CHARS:
                self.counts[text] = self.counts.get(text, 0) + 1
            for _, _, child, child_is_schema in children(node, is_schema):
                self.count(child, child_is_schema)

    def replace(self, node, is_schema=True, top=False):
        if isinstance(node, list):
            return [self.replace(v, is_schema) for v in node]
        if not isinstance(node, dict):
            return node
        text = json.dumps(node, sort_keys=True)
        if is_schema and not top and self.counts.get(text, 0) > 1:
            return {"$ref": f"#/$defs/{self.define(text, node)}"}
        out: dict = {}
        for key, name, child, child_is_schema in children(node, is_schema):
            if name is None:
                out[key] = self.replace(child, child_is_schema)
            else:
                out.setdefault(key, {})[name] = self.replace(child, True)
        return out

    def define(self, text: str, node: dict) -> str:
        if text not in self.names:
            name = self.names[text] = f"{self.prefix}.{hashlib.sha256(text.encode()).hexdigest()[:12]}"
            self.defs[name] = {}  # placeholder: keeps the order of first use
            self.defs[name] = self.replace(node, top=True)
        return self.names[text]


def build(crd: dict, source: str) -> tuple[str, dict]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    if (group, kind) not in OUTPUTS:
        sys.exit(f"no output named for {group} {kind}: add it to OUTPUTS in {Path(__file__).name}")
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    body = strict(version["schema"]["openAPIV3Schema"])
    body["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
    body["properties"]["kind"] = {"const": kind}
    body["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
    body["properties"]["status"] = {"type": "object"}  # written by the controller, never by us
    body["required"] = ["apiVersion", "kind", "metadata", "spec"]
    body["additionalProperties"] = False
    deduped = Dedup(body, kind.lower())
    body, defs = deduped.schema, deduped.defs
    name = OUTPUTS[(group, kind)]
    return name, {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://seedlings.invalid/schemas/{name}",
        "title": f"{kind} ({group}/{version['name']})",
        "description": f"Generated by {Path(__file__).name} from the CRD {crd['metadata']['name']} of {source} "
        f"and Kubernetes {K8S_VERSION}; do not edit.",
        **body,
        "$defs": {**defs, **kubernetes_defs([OBJECT_META])},
    }


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a or not Path(a.split("=", 1)[0]).is_file() for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    for arg in argv:
        path, source = arg.split("=", 1)
        (crd,) = [d for d in yaml.safe_load_all(Path(path).read_text()) if d and d.get("kind") ==
                  "CustomResourceDefinition"]
        name, schema = build(crd, source)
        out = HERE / name
        out.write_text(json.dumps(schema, indent=1) + "\n")
        print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
