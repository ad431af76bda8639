"""Renders deploy/k8s with `kubectl kustomize` and reads what the tests check: containers, their
environment resolved through ConfigMaps and Secrets, the Dockerfile's targets."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
COMPONENTS = ("network-policies", "keda", "daytona", "stripe", "supabase-auth", "langfuse", "monitoring")
# The Python module each image's container runs, by Dockerfile target.
SERVICE_OF_TARGET = {
    "gateway": "gateway",
    "auth": "auth",
    "billing": "billing",
    "sandbox": "sandbox",
    "runner-api": "runner",
    "runner-worker": "runner",
    "fake-llm": "fakellm",
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        message = "kubectl (with its built-in kustomize) is not installed"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{message} (CI=true: the deploy tests must run)", pytrace=False)
        pytest.skip(message)
    return path


def render(overlay: str, components: tuple[str, ...] = (), *, work_dir: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize` makes of `overlay` plus `components` (a kustomization of
    its own in `work_dir`, as an operator would write one). Rendered once per test session; each
    call gets its own copy to read or change."""
    return [doc for doc in yaml.safe_load_all(_rendered(overlay, tuple(components), work_dir)) if doc]


_RENDERED: dict[tuple[str, tuple[str, ...]], str] = {}


def _rendered(overlay: str, components: tuple[str, ...], work_dir: Path) -> str:
    if (overlay, components) not in _RENDERED:
        _RENDERED[(overlay, components)] = _kustomize(overlay, components, work_dir)
    return _RENDERED[(overlay, components)]


def _kustomize(overlay: str, components: tuple[str, ...], work_dir: Path) -> str:
    target = K8S / "overlays" / overlay if overlay != "base" else K8S / "base"
    if components:
        work_dir.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(K8S, work_dir)  # kustomize takes relative paths only
        base = f"{rel}/overlays/{overlay}" if overlay != "base" else f"{rel}/base"
        (work_dir / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": "agentry",
                    "resources": [base],
                    "components": [f"{rel}/components/{c}" for c in components],
                }
            )
        )
        target = work_dir
    out = subprocess.run([kubectl(), "kustomize", str(target)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
    return out.stdout


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


@dataclass
class Container:
    workload: dict
    spec: dict
    target: str | None  # the Dockerfile target its image is built from, None for third-party images
    env: dict[str, str] = field(default_factory=dict)  # resolved values (None: optional and absent)

    @property
    def name(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}"

    @property
    def service(self) -> str | None:
        return SERVICE_OF_TARGET.get(self.target) if self.target else None


def image_target(image: str) -> str | None:
    """`registry/agentry-auth:tag` -> `auth`; images not built from our Dockerfile -> None."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return name.removeprefix("agentry-") if name.startswith("agentry-") else None


def containers(docs: list[dict], *, secrets: dict[str, dict[str, str]] | None = None) -> list[Container]:
    """Every container of every Deployment and Job, with its environment resolved: ConfigMaps from
    `docs`, Secrets from `docs` or `secrets` (name -> key -> value)."""
    config_maps = {name: cm.get("data", {}) for name, cm in by_kind(docs, "ConfigMap").items()}
    all_secrets = {
        name: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()} | s.get("stringData", {})
        for name, s in by_kind(docs, "Secret").items()
    }
    all_secrets.update(secrets or {})
    found = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for spec in pod_spec(doc)["containers"]:
            env: dict[str, str | None] = {}
            for source in spec.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(config_maps[source["configMapRef"]["name"]])
                if "secretRef" in source:
                    env.update(all_secrets[source["secretRef"]["name"]])
            for var in spec.get("env", []):
                if "value" in var:
                    env[var["name"]] = var["value"]
                    continue
                ref = var["valueFrom"]
                kind, store = (
                    ("configMapKeyRef", config_maps) if "configMapKeyRef" in ref else ("secretKeyRef", all_secrets)
                )
                key_ref = ref[kind]
                value = store.get(key_ref["name"], {}).get(key_ref["key"])
                if value is None and not key_ref.get("optional"):
                    raise AssertionError(
                        f"{doc['metadata']['name']}: {var['name']} refers to "
                        f"{key_ref['name']}/{key_ref['key']}, which does not exist"
                    )
                env[var["name"]] = value
            found.append(Container(doc, spec, image_target(spec["image"]), env))
    return found


def secret_template() -> dict[str, str]:
    """The documented Secret (deploy/k8s/secrets.example.yaml): key -> placeholder value."""
    doc = yaml.safe_load((K8S / "secrets.example.yaml").read_text())
    return dict(doc["stringData"])


@dataclass
class Target:
    name: str
    entrypoint: list[str]
    env: dict[str, str]
    user: str | None
    workdir: str = "/"


def dockerfile_targets() -> dict[str, Target]:
    """Each stage of the Dockerfile that sets an ENTRYPOINT (a service image), with the user and
    environment it inherits from the stages it is built on."""
    stages: dict[str, Target] = {}
    current: Target | None = None
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())  # join continued lines
    for raw in text.splitlines():
        line = raw.strip()
        if match := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            parent = stages.get(match.group(1))
            current = Target(
                match.group(2) or "",
                list(parent.entrypoint) if parent else [],
                dict(parent.env) if parent else {},
                parent.user if parent else None,
                parent.workdir if parent else "/",
            )
            stages[current.name] = current
        elif current is None:
            continue
        elif line.startswith("ENTRYPOINT"):
            current.entrypoint = yaml.safe_load(line.removeprefix("ENTRYPOINT"))
        elif line.startswith("WORKDIR"):
            current.workdir = line.split()[1]
        elif line.startswith("USER"):
            current.user = line.split()[1]
        elif line.startswith("ENV") and "=" in line:
            for pair in re.findall(r"(\w+)=(\S+)", line):
                current.env[pair[0]] = pair[1]
    return {name: t for name, t in stages.items() if t.entrypoint}
