"""Rendered Kubernetes manifests run with `podman kube play`, and what podman made checked against them.

`podman kube play` (Debian bookworm's podman 4.3, what .ci/run installs) runs Pods and Deployments (one pod
per replica, named `<deployment>-pod-<i>`), takes ConfigMaps from the same file, mounts a
persistentVolumeClaim as the podman volume named like the claim and an emptyDir as a volume named like the
pod's volume (removed with the pod), reads a secretKeyRef from a podman secret holding the Secret's `data`
as JSON, publishes `hostPort`s only, and runs init containers once, before the others. It skips what it does
not know without a word: kinds (Job, Service, HPA, NetworkPolicy…), readiness and startup probes, lifecycle
hooks, requests, fsGroup, sizeLimit, topology constraints; and it passes `$(VAR)` in command and args through
as it is, where the kubelet expands it. A play that succeeds therefore proves little by itself: `check_pod`
compares every container podman made with the manifest (image, argv, env, mounts, CPU and memory limits,
user, capabilities, privilege escalation, read-only root, published ports), and fails on what is missing.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, skip_or_fail, which
from .podman import PODMAN

LABEL = "seedlings-test=kube-play"  # on every volume and network made here: a leftover of ours may go
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# kube play takes no --ulimit: podman's defaults (nofile 1048576) exceed the hard limits of CI sandboxes, so
# the containers get the limits the other image tests pass with --ulimit.
CONTAINERS_CONF = '[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]\n'
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "m": 1e-3}


def render(path: str) -> list[dict]:
    if not which("kubectl"):
        skip_or_fail("kubectl is not installed (it renders the manifests with `kubectl kustomize`)")
    out = subprocess.run(["kubectl", "kustomize", str(REPO / path)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def quantity(text) -> float:
    """A Kubernetes quantity ("768Mi", "500m", "2") as a number."""
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert m, f"not a quantity: {text!r}"
    return float(m.group(1)) * UNITS.get(m.group(2), 1)


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def job_pod(job: dict, index: int) -> dict:
    """Pod `index` of an Indexed Job, as the Job controller makes it, with restartPolicy Never.

    The controller names the pod's host `<job>-<index>`, puts the index in an annotation and in
    JOB_COMPLETION_INDEX (through a fieldRef to that annotation)."""
    template = copy.deepcopy(job["spec"]["template"])
    name = f"{job['metadata']['name']}-{index}"
    meta = template.get("metadata", {})
    meta["name"] = name
    meta.setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
    meta.setdefault("labels", {})["job-name"] = job["metadata"]["name"]
    spec = template["spec"]
    spec["restartPolicy"] = "Never"
    spec["hostname"] = name
    ref = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}
    for c in containers(spec):
        if not any(e["name"] == "JOB_COMPLETION_INDEX" for e in c.setdefault("env", [])):
            c["env"].append({"name": "JOB_COMPLETION_INDEX", "valueFrom": ref})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def set_images(doc: dict, images: dict[str, str]) -> None:
    """Point each container at the image built by the tests, by the manifest's image name (any tag)."""
    for c in containers(pod_spec(doc)):
        repo = c["image"].split(":")[0]
        assert repo in images, f"container {c['name']}: no test image for {c['image']}"
        c["image"] = images[repo]


def set_env(container: dict, name: str, value: str) -> None:
    """An env entry replaced by name, as an overlay's strategic-merge patch does."""
    (entry,) = [e for e in container["env"] if e["name"] == name]
    entry.clear()
    entry.update(name=name, value=value)


def pod_names(doc: dict) -> list[str]:
    if doc["kind"] == "Pod":
        return [doc["metadata"]["name"]]
    return [f"{doc['metadata']['name']}-pod-{i}" for i in range(doc["spec"].get("replicas", 1))]


class Env:
    """A container's environment as the kubelet computes it: envFrom, then env (literals, ConfigMap and Secret
    keys, the downward API)."""

    def __init__(self, configmaps: dict[str, dict], secrets: dict[str, dict]):
        self.configmaps, self.secrets = configmaps, secrets

    def of(self, pod_name: str, meta: dict, spec: dict, c: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            store = self.configmaps if "configMapRef" in source else self.secrets
            if ref["name"] in store:
                env.update({source.get("prefix", "") + k: v for k, v in store[ref["name"]].items()})
            else:
                assert ref.get("optional"), f"{c['name']}: envFrom {ref['name']} is not there"
        for e in c.get("env", []):
            value = self._value(pod_name, meta, c, e)
            if value is not None:
                env[e["name"]] = value
        return env

    def _value(self, pod_name: str, meta: dict, c: dict, e: dict) -> str | None:
        if "valueFrom" not in e:
            return e.get("value", "")
        src = e["valueFrom"]
        if "configMapKeyRef" in src or "secretKeyRef" in src:
            ref = src.get("configMapKeyRef") or src["secretKeyRef"]
            store = self.configmaps if "configMapKeyRef" in src else self.secrets
            found = store.get(ref["name"], {}).get(ref["key"])
            assert found is not None or ref.get("optional"), f"{c['name']}: {e['name']} refers to nothing"
            return found
        if "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            if path == "metadata.name":
                return pod_name
            m = re.fullmatch(r"metadata\.(annotations|labels)\['(.+)'\]", path)
            assert m, f"{c['name']}: {e['name']}: fieldRef {path} not emulated here"
            return meta.get(m.group(1), {}).get(m.group(2), "")
        res = src["resourceFieldRef"]
        kind, what = res["resource"].split(".")
        amount = quantity(c["resources"][kind][what]) / quantity(res.get("divisor", "1"))
        return str(math.ceil(amount))


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """`$(VAR)` in command and args, as the kubelet expands it ($$ escapes; unknown names stay)."""

    def one_arg(text: str) -> str:
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)

    return [one_arg(a) for a in args]


def expand_commands(doc: dict, env: Env) -> None:
    """What the kubelet would do and podman 4.3 does not: expand `$(VAR)` in every command and args."""
    spec, meta = pod_spec(doc), (doc if doc["kind"] == "Pod" else doc["spec"]["template"]).get("metadata", {})
    name = pod_names(doc)[0]
    for c in containers(spec):
        values = env.of(name, meta, spec, c)
        for key in ("command", "args"):
            if key in c:
                c[key] = expand(c[key], values)


class Kube:
    """podman kube play with what it needs made beforehand (volumes, secrets, a network), all removed after."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.conf = tmp / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.pods: list[str] = []
        self.volumes: list[str] = []
        self.secrets: list[str] = []
        self.networks: list[str] = []
        self.since = ""

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "CONTAINERS_CONF": str(self.conf)})
        if check:
            assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        return proc

    def _free(self, kind: str, name: str) -> None:
        """No `kind` (volume, network) of this name, or only a leftover of this test, which goes."""
        found = self.podman(kind, "inspect", name, check=False)
        if found.returncode != 0:
            return
        labels = json.loads(found.stdout)[0].get("Labels") or {}
        key, value = LABEL.split("=")
        if labels.get(key) != value:
            pytest.fail(f"a podman {kind} named {name} exists and is not this test's: remove it or run elsewhere")
        self.podman(kind, "rm", "-f", name)

    def volume(self, name: str, owner: int | None = None) -> Path:
        """The podman volume a persistentVolumeClaim `name` becomes; `owner` stands in for the pod's fsGroup,
        which kube play ignores (the kubelet would chown the volume)."""
        self._free("volume", name)
        self.podman("volume", "create", "--label", LABEL, name)
        self.volumes.append(name)
        path = Path(self.podman("volume", "inspect", name, "--format", "{{.Mountpoint}}").stdout.strip())
        if owner is not None:
            os.chown(path, owner, owner)
        return path

    def secret(self, name: str, data: dict[str, str]) -> dict[str, str]:
        """A Secret as `kubectl create secret generic NAME --from-literal=…` makes it, as podman reads it."""
        if self.podman("secret", "inspect", name, check=False).returncode == 0:
            pytest.fail(f"a podman secret named {name} exists: remove it (podman secret rm {name})")
        path = self.tmp / f"secret-{name}.json"
        path.write_text(json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()}))
        self.podman("secret", "create", name, str(path))
        self.secrets.append(name)
        return data

    def network(self, name: str, subnet: str) -> str:
        self._free("network", name)
        self.podman("network", "create", "--label", LABEL, "--subnet", subnet, name)
        self.networks.append(name)
        return name

    def play(self, docs: list[dict], *options: str) -> list[str]:
        """Play `docs` as one file; the names of the pods they make."""
        names = [n for d in docs if d["kind"] in ("Pod", "Deployment") for n in pod_names(d)]
        for name in names:
            if self.podman("pod", "exists", name, check=False).returncode == 0:
                pytest.fail(f"a pod named {name} exists: remove it (podman pod rm -f {name})")
        path = self.tmp / "play.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.pods += names
        self.since = datetime.now(timezone.utc).isoformat()  # the events of this play, not of an earlier one
        # podman makes a volume for each emptyDir (removed with its pod) and each ConfigMap volume (left behind)
        made = {v["configMap"]["name"] if "configMap" in v else v["name"] for d in docs if d["kind"] != "ConfigMap"
                for v in pod_spec(d).get("volumes", []) if "configMap" in v or "emptyDir" in v}
        before = self.volume_names()
        try:
            self.podman("kube", "play", *options, str(path), timeout=300)
        finally:
            self.volumes += sorted((self.volume_names() - before) & made)
        return names

    def volume_names(self) -> set[str]:
        return set(self.podman("volume", "ls", "--format", "{{.Name}}").stdout.split())

    def wait(self, container: str, timeout: float) -> int:
        """The exit code of `container` once it has stopped; fails with its log if it runs past `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect(container)["State"]
            if state["Status"] in ("exited", "stopped"):
                return state["ExitCode"]
            time.sleep(1)
        pytest.fail(f"{container} still running after {timeout:.0f}s:\n{self.logs(container)}")

    def inspect(self, name: str, what: str = "container") -> dict:
        """`podman container|pod|image inspect` of one object."""
        found = json.loads(self.podman(what, "inspect", name).stdout)
        return found[0] if isinstance(found, list) else found

    def logs(self, container: str) -> str:
        proc = self.podman("logs", container, check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    def exit_codes(self, container: str) -> list[int]:
        """Exit codes of every run of `container` (podman's events): init containers are gone once they ran."""
        proc = self.podman("events", "--stream=false", "--since", self.since, "--filter", f"container={container}",
                           "--filter", "event=died", "--format", "{{.ContainerExitCode}}")
        return [int(line) for line in proc.stdout.split()]

    def close(self) -> None:
        for pod in self.pods:
            self.podman("pod", "rm", "-f", "-t", "0", pod, check=False)
        for volume in self.volumes:
            self.podman("volume", "rm", "-f", volume, check=False)
        for secret in self.secrets:
            self.podman("secret", "rm", secret, check=False)
        for network in self.networks:
            self.podman("network", "rm", "-f", network, check=False)


def check_pod(kube: Kube, doc: dict, pod: str, env: Env) -> dict[str, dict]:
    """Every container the manifest's pod asks for, as podman made it; {container name: podman inspect}."""
    spec = pod_spec(doc)
    meta = (doc if doc["kind"] == "Pod" else doc["spec"]["template"]).get("metadata", {})
    made = {c["Name"] for c in kube.inspect(pod, "pod")["Containers"]}
    wanted = {f"{pod}-{c['name']}" for c in spec["containers"]}
    assert wanted <= made, f"{pod}: podman made {sorted(made)}, the manifest asks for {sorted(wanted)}"
    assert len(made - wanted) == 1, f"{pod}: more than the infra container besides the manifest's: {made}"
    for c in spec.get("initContainers", []):
        assert kube.exit_codes(f"{pod}-{c['name']}") == [0], f"init container {c['name']} did not run to success"
    found = {}
    for c in spec["containers"]:
        info = kube.inspect(f"{pod}-{c['name']}")
        check_container(kube, info, c, spec, env.of(pod, meta, spec, c))
        found[c["name"]] = info
    return found


def check_container(kube: Kube, info: dict, c: dict, spec: dict, env: dict[str, str]) -> None:
    name, config, host = c["name"], info["Config"], info["HostConfig"]
    assert info["ImageName"] == c["image"], name
    image = kube.inspect(c["image"], "image")["Config"]
    argv = c.get("command") or image.get("Entrypoint") or []
    argv = argv + (c.get("args") if "args" in c else ([] if "command" in c else image.get("Cmd") or []))
    assert [info["Path"], *info["Args"]] == argv, f"{name}: runs {[info['Path'], *info['Args']]}, not {argv}"
    actual = dict(e.split("=", 1) for e in config["Env"])
    missing = {k: v for k, v in env.items() if actual.get(k) != v}
    assert not missing, f"{name}: env differs from the manifest's: {missing} (podman: " \
                        f"{ {k: actual.get(k) for k in missing} })"
    check_mounts(info, c, spec)
    limits = c.get("resources", {}).get("limits", {})
    if "memory" in limits:
        assert host["Memory"] == quantity(limits["memory"]), f"{name}: memory limit {host['Memory']}"
    if "cpu" in limits:
        period = host.get("CpuPeriod") or 0
        assert period and host["CpuQuota"] / period == pytest.approx(quantity(limits["cpu"])), f"{name}: CPU limit"
    check_security(info, c, spec)
    for port in c.get("ports", []):
        if "hostPort" in port:
            # A pod's ports are bound by its infra container; each container shows them in NetworkSettings.
            bound = (info["NetworkSettings"].get("Ports") or {}).get(f"{port['containerPort']}/tcp") or [{}]
            assert bound[0].get("HostPort") == str(port["hostPort"]), f"{name}: port {port} not published"


def check_mounts(info: dict, c: dict, spec: dict) -> None:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        (mount,) = [x for x in info["Mounts"] if x["Destination"] == m["mountPath"]] or [None]
        assert mount, f"{c['name']}: volume {m['name']} is not mounted at {m['mountPath']}"
        source = volumes[m["name"]]
        read_only = m.get("readOnly") or source.get("persistentVolumeClaim", {}).get("readOnly", False)
        assert mount["RW"] is not read_only, f"{c['name']}: {m['mountPath']} RW={mount['RW']}"
        if "persistentVolumeClaim" in source:
            assert mount["Name"] == source["persistentVolumeClaim"]["claimName"], mount


def check_security(info: dict, c: dict, spec: dict) -> None:
    name, config, host = c["name"], info["Config"], info["HostConfig"]
    sc = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
    if "runAsUser" in sc:
        user = f"{sc['runAsUser']}:{sc['runAsGroup']}" if "runAsGroup" in sc else str(sc["runAsUser"])
        assert config["User"] == user, f"{name}: runs as {config['User']}, not {user}"
    if sc.get("readOnlyRootFilesystem"):
        assert host["ReadonlyRootfs"] is True, f"{name}: root filesystem writable"
    if "ALL" in sc.get("capabilities", {}).get("drop", []):
        assert not info.get("EffectiveCaps"), f"{name}: keeps {info.get('EffectiveCaps')}"
    if sc.get("allowPrivilegeEscalation") is False:
        assert "no-new-privileges" in (host.get("SecurityOpt") or []), f"{name}: may gain privileges"
