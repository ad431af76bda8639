"""The manifests agree with the code: every setting a service reads is set or knowingly defaulted,
nothing is set that no service reads, the values parse, ports (metrics ports too) line up, every Secret key is in the
template, images and commands are the Dockerfile's, drains outlast the hand-back, and the pods
are locked down."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import secrets
from functools import cache
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from agentry.servicekit.entrypoint import settings_env

from .manifests import (
    COMPONENTS,
    K8S,
    Container,
    by_kind,
    containers,
    dockerfile_targets,
    pod_spec,
    render,
    secret_template,
)

# Components whose settings land with another issue: their checks xfail (not strict) until then.
PENDING: dict[str, str] = {}
# Read by libraries, not by our settings classes.
LIBRARY_ENV = {
    "OPENAI_API_KEY": "LiteLLM",
    "ANTHROPIC_API_KEY": "LiteLLM",
    "LANGFUSE_HOST": "Langfuse",
    "LANGFUSE_PUBLIC_KEY": "Langfuse",
    "LANGFUSE_SECRET_KEY": "Langfuse",
}
DEFAULTED = yaml.safe_load((K8S / "defaulted-settings.yaml").read_text())
UNUSED_BY_ROLE = DEFAULTED.pop("unused-by-role")
MIXES = [("dev", ()), ("production", ())] + [("production", (c,)) for c in COMPONENTS if c != "network-policies"]


@cache
def settings_classes(service: str) -> tuple[type[BaseSettings], ...]:
    """Every pydantic-settings class in agentry.<service> (found by importing its modules), so a
    class a later issue adds is checked without touching this test."""
    package = importlib.import_module(f"agentry.{service}")
    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if not module.name.endswith("__main__") and ".migrations" not in module.name:
            importlib.import_module(module.name)
    found: set[type[BaseSettings]] = set()
    pending = [BaseSettings]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith(f"agentry.{service}."):
                found.add(sub)
    assert found, f"agentry.{service} has no settings class"
    return tuple(sorted(found, key=lambda c: c.__qualname__))


def env_read(service: str) -> dict[str, tuple[type[BaseSettings], str]]:
    read = {}
    for cls in settings_classes(service):
        read.update({env: (cls, field) for env, field in settings_env(cls).items()})
    return read


def ours(docs: list[dict], **kwargs) -> list[Container]:
    """Our services' containers (fake-llm, a dev stand-in with flags instead of settings, aside)."""
    return [c for c in containers(docs, **kwargs) if c.service and c.service != "fakellm"]


def production_secrets() -> dict[str, dict[str, str]]:
    """The template's keys with values that pass the settings' checks, as an operator's would."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return {
        "agentry-secrets": {**secret_template(), "internal-token": secrets.token_urlsafe(32), "auth-signing-key": key}
    }


def check_or_xfail(components: tuple[str, ...], problems: list[str]) -> None:
    pending = [PENDING[c] for c in components if c in PENDING]
    if problems and pending:
        pytest.xfail(f"waits for {', '.join(pending)}: " + "; ".join(problems))
    assert not problems, "\n".join(problems)


@pytest.fixture(params=MIXES, ids=lambda m: "+".join([m[0], *m[1]]))
def mix(request, tmp_path):
    overlay, components = request.param
    docs = render(overlay, components, work_dir=tmp_path / "mix")
    extra = production_secrets() if overlay == "production" else None
    return components, docs, ours(docs, secrets=extra)


def test_every_setting_is_set_or_knowingly_defaulted_and_nothing_else_is_set(mix):
    components, docs, found = mix
    problems = []
    for c in found:
        read = env_read(c.service)
        for name in c.env:
            if name not in read and name not in LIBRARY_ENV:
                problems.append(f"{c.name}: sets {name}, which no {c.service} settings class reads")
        if c.workload["kind"] != "Deployment":
            continue
        defaulted = set(DEFAULTED.get(c.workload["metadata"]["name"], []))
        names_of: dict[tuple[type[BaseSettings], str], list[str]] = {}
        for env, key in read.items():  # a field read under several names is set by any of them
            names_of.setdefault(key, []).append(env)
        for (cls, field), names in names_of.items():
            env = names[0]
            if any(name in c.env for name in names):
                continue
            if set(UNUSED_BY_ROLE.get(c.workload["metadata"]["name"], [])).intersection(names):
                continue
            if not defaulted.intersection(names):
                problems.append(
                    f"{c.name}: {c.service} reads {env} ({cls.__name__}.{field}); set it in the "
                    f"Deployment or list it in deploy/k8s/defaulted-settings.yaml"
                )
                continue
            default = str(cls.model_fields[field].get_default(call_default_factory=True))
            if re.search(r"127\.0\.0\.1|localhost|sqlite|\./var", default):
                problems.append(
                    f"{c.name}: {env} defaults to {default!r}, which only works on one machine: "
                    f"set it in the Deployment"
                )
    check_or_xfail(components, problems)


def test_settings_parse_from_each_containers_environment(mix, monkeypatch):
    """The settings classes accept the resolved environment: a misspelt literal, a bad number or a
    placeholder secret outside dev mode fails here, not at 3 a.m. in a crash loop."""
    components, docs, found = mix
    problems = []
    for c in found:
        for name in list(os.environ):
            if name.startswith(("AGENTRY_", "DAYTONA_")):
                monkeypatch.delenv(name)
        for name, value in c.env.items():
            if value is not None:
                monkeypatch.setenv(name, value)
        for cls in settings_classes(c.service):
            try:
                cls()
            except Exception as exc:  # noqa: BLE001 - every failure is reported with its container
                problems.append(f"{c.name}: {cls.__name__}: {exc}")
    check_or_xfail(components, problems)


def test_ports_line_up(mix):
    """Each service binds the port its container declares; probes and Services point at declared
    ports; every `<service>:<port>` an env var names is a Service exposing that port."""
    _, docs, found = mix
    services = by_kind(docs, "Service")
    deployments = by_kind(docs, "Deployment")
    problems = []
    for c in found:
        declared = {p["containerPort"]: p.get("name") for p in c.spec.get("ports", [])}
        names = {name: port for port, name in declared.items() if name}
        if c.workload["kind"] == "Deployment":
            prefix = "AGENTRY_" + {"runner": "RUNNER"}.get(c.service, c.service.upper()) + "_"
            bound = int(c.env.get(prefix + "PORT", -1))
            # A gRPC service serves Prometheus metrics on a port of its own; the gateway on its HTTP port.
            metrics = int(c.env.get(prefix + "METRICS_PORT") or bound)
            if set(declared) != {bound, metrics}:
                problems.append(
                    f"{c.name}: binds {prefix}PORT={bound} and {prefix}METRICS_PORT={metrics} "
                    f"but declares {sorted(declared)}"
                )
            annotations = c.workload["spec"]["template"]["metadata"].get("annotations", {})
            if annotations.get("prometheus.io/port") != str(metrics):
                problems.append(
                    f"{c.name}: Prometheus scrapes port {annotations.get('prometheus.io/port')}, "
                    f"but metrics are served on {metrics}"
                )
            if c.env.get(prefix + "HOST") != "0.0.0.0":
                problems.append(f"{c.name}: {prefix}HOST must be 0.0.0.0 (the default listens on loopback only)")
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.spec.get(probe_name)
                if probe is None:
                    problems.append(f"{c.name}: no {probe_name}")
                    continue
                port = (probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket"))["port"]
                port = names.get(port, port)
                if port not in declared:
                    problems.append(f"{c.name}: {probe_name} probes {port}, not a declared port")
                if c.service != "gateway" and "grpc" not in probe:
                    problems.append(f"{c.name}: {probe_name} of a gRPC service must be a native grpc probe")
        for name, value in c.env.items():
            for host, port in re.findall(r"(?:^|@|//)([a-z][a-z0-9-]*):(\d+)", value or ""):
                if host in services and int(port) not in {p["port"] for p in services[host]["spec"]["ports"]}:
                    problems.append(f"{c.name}: {name} names {host}:{port}, but Service {host} has no port {port}")
            if name.endswith("_TARGET"):
                host, _, port = (value or "").partition(":")
                if host not in services:
                    problems.append(f"{c.name}: {name}={value} names no Service")
    for name, svc in services.items():
        selected = [
            d
            for d in deployments.values()
            if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if len(selected) != 1:
            problems.append(f"Service {name} selects {len(selected)} Deployments")
            continue
        container_ports = {
            p["containerPort"]: p.get("name") for ct in pod_spec(selected[0])["containers"] for p in ct.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            number = next((n for n, pname in container_ports.items() if pname == target), target)
            if number not in container_ports:
                problems.append(f"Service {name}: targetPort {target} is no container port")
            elif number != port["port"]:
                problems.append(f"Service {name}: port {port['port']} != container port {number}")
    assert not problems, "\n".join(problems)


def test_every_secret_key_is_in_the_template_and_dev_provides_the_required_ones(tmp_path):
    template = set(secret_template())
    problems = []
    for overlay, components in [
        ("production", tuple(c for c in COMPONENTS if c != "network-policies")),
        ("dev", ("keda",)),
    ]:
        docs = render(overlay, components, work_dir=tmp_path / overlay)
        generated = {k for s in by_kind(docs, "Secret").values() for k in s.get("data", {})}
        for doc in docs:
            refs = []
            if doc["kind"] in ("Deployment", "Job"):
                for ct in pod_spec(doc)["containers"]:
                    refs += [
                        (v["valueFrom"]["secretKeyRef"], ct["name"])
                        for v in ct.get("env", [])
                        if "secretKeyRef" in v.get("valueFrom", {})
                    ]
            if doc["kind"] == "TriggerAuthentication":
                refs += [(r, "keda") for r in doc["spec"].get("secretTargetRef", [])]
            for ref, where in refs:
                assert ref["name"] == "agentry-secrets", f"{where}: unexpected Secret {ref['name']}"
                if ref["key"] not in template:
                    problems.append(f"{overlay}: {where} uses key {ref['key']}, not in secrets.example.yaml")
                if overlay == "dev" and not ref.get("optional") and ref["key"] not in generated:
                    problems.append(f"dev: {where} needs key {ref['key']}, which the dev overlay does not generate")
    assert not problems, "\n".join(problems)


def test_images_and_commands_are_the_dockerfiles(tmp_path):
    targets = dockerfile_targets()
    assert set(targets) == {"gateway", "auth", "billing", "sandbox", "runner-api", "runner-worker", "fake-llm"}
    docs = render("dev", work_dir=tmp_path)
    problems = []
    for c in containers(docs):
        if c.target is None:
            continue  # PostgreSQL, Redis, RabbitMQ of the dev overlay
        target = targets.get(c.target)
        if target is None:
            problems.append(f"{c.name}: image {c.spec['image']} is no Dockerfile target")
            continue
        if c.spec.get("command") != target.entrypoint:
            problems.append(f"{c.name}: command {c.spec.get('command')} != the image's {target.entrypoint}")
        for name, value in target.env.items():
            if name.startswith("AGENTRY_") and c.env.get(name, value) != value:
                problems.append(f"{c.name}: {name}={c.env[name]} but image {c.target} sets {value}")
        if target.user != "10001:10001":
            problems.append(f"image {c.target} runs as {target.user}, not 10001:10001")
        pod_security = pod_spec(c.workload).get("securityContext", {})
        if (pod_security.get("runAsUser"), pod_security.get("runAsNonRoot")) != (10001, True):
            problems.append(f"{c.name}: pod must run as the image's user 10001, non-root")
    text = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in text and "uv sync --frozen --no-dev" in text
    assert re.search(r"ARG PYTHON_IMAGE=\S+-slim\S*@sha256:[0-9a-f]{64}", text), "the base is pinned by digest"
    assert problems == [], "\n".join(problems)


def test_drain_outlasts_the_hand_back_and_pods_are_locked_down(mix):
    """terminationGracePeriodSeconds covers preStop + the service's grace (the workers' hand-back)
    + 10 s to release leases and close; every container is non-root, read-only, without
    capabilities or privilege escalation, and seccomp'd (the sandbox's bubblewrap exception aside,
    and only while it runs the local provider)."""
    components, docs, found = mix
    problems = []
    for c in found:
        if c.workload["kind"] != "Deployment":
            continue
        pod = pod_spec(c.workload)
        pre_stop = c.spec.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if pre_stop < 3:
            problems.append(f"{c.name}: needs a preStop pause so endpoints stop routing before SIGTERM")
        prefix = "AGENTRY_" + {"runner": "RUNNER"}.get(c.service, c.service.upper()) + "_"
        grace = float(c.env.get(prefix + "GRACE_SECONDS") or 10)
        if pod.get("terminationGracePeriodSeconds", 30) < pre_stop + grace + 10:
            problems.append(
                f"{c.name}: terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds')} "
                f"< preStop {pre_stop} + grace {grace} + 10"
            )
        sc = c.spec.get("securityContext", {})
        if (sc.get("allowPrivilegeEscalation"), sc.get("readOnlyRootFilesystem"), sc.get("capabilities")) != (
            False,
            True,
            {"drop": ["ALL"]},
        ):
            problems.append(f"{c.name}: securityContext must forbid escalation, drop ALL and mount / read-only")
        seccomp = (sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile") or {}).get("type")
        local_sandbox = c.service == "sandbox" and c.env.get("AGENTRY_SANDBOX_PROVIDER", "local") == "local"
        if seccomp != "RuntimeDefault" and not (local_sandbox and seccomp == "Unconfined"):
            problems.append(f"{c.name}: seccomp {seccomp}")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{c.name}: mounts a service account token it does not use")
        mounts = {m["mountPath"] for m in c.spec.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{c.name}: a read-only root needs /tmp as a volume")
    check_or_xfail(components, problems)


def test_keda_target_matches_a_worker_pods_capacity(tmp_path):
    docs = render("production", ("keda",), work_dir=tmp_path)
    worker = next(
        c for c in ours(docs, secrets=production_secrets()) if c.workload["metadata"]["name"] == "runner-worker"
    )
    per_pod = int(worker.env["AGENTRY_RUNNER_WORKER_CONCURRENCY"]) * int(worker.env.get("AGENTRY_RUNNER_PROCESSES", 1))
    trigger = by_kind(docs, "ScaledObject")["runner-worker"]["spec"]["triggers"][0]
    # The target is the steady load planned per pod; it must stay under the ceiling a pod may take
    # (concurrency x processes), so scale-out starts before admission has to hold jobs back.
    assert 0 < float(trigger["metadata"]["value"]) <= per_pod, "queue length per worker pod within its ceiling"


def test_autoscaled_deployments_leave_their_replica_count_to_the_autoscaler(mix):
    """A Deployment an HPA or KEDA scales has no `replicas`: re-applying the manifests (every
    rollout) would otherwise scale it back to that number, handing back the runs of every worker
    it removed."""
    _, docs, _ = mix
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for kind in ("HorizontalPodAutoscaler", "ScaledObject")
        for h in by_kind(docs, kind).values()
    }
    fixed = [name for name in scaled if "replicas" in by_kind(docs, "Deployment")[name]["spec"]]
    assert not fixed, f"autoscaled but with a fixed replicas field: {fixed}"


def test_worker_memory_budget_fits_its_memory_limit(mix):
    """Admission stops taking runs at AGENTRY_RUNNER_MEMORY_BUDGET_MB per process: all processes'
    budgets together stay within 80% of the pod's memory limit, so the kubelet never OOM-kills a
    worker that admission thought had room."""
    _, _, found = mix
    worker = next(c for c in found if c.workload["metadata"]["name"] == "runner-worker")
    limit = worker.spec["resources"]["limits"]["memory"]
    units = {"Mi": 1, "Gi": 1024}
    limit_mb = float(limit[:-2]) * units[limit[-2:]]
    budget = float(worker.env.get("AGENTRY_RUNNER_MEMORY_BUDGET_MB") or 0)
    processes = int(worker.env.get("AGENTRY_RUNNER_PROCESSES") or 1)
    assert 0 < budget * processes <= 0.8 * limit_mb, (budget, processes, limit)
