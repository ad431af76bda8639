"""Every overlay, alone and with each component (and production with all of them), renders with
`kubectl kustomize` and validates against the Kubernetes schemas and KEDA's CRD schema."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor, schema_contents
from referencing import Registry, Resource

from .manifests import COMPONENTS, OVERLAYS, by_kind, render

# The oldest Kubernetes the manifests are for: native gRPC probes (1.27) and the preStop sleep
# action (1.30, on by default); checked against the newest schema the validator has as well.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
KEDA_SCHEMA = yaml.safe_load((Path(__file__).parent / "keda_schema.yaml").read_text())
# The Prometheus Operator's resources the monitoring component uses: the fields it sets.
_RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": "string"},
        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
        "labels": {"type": "object"},
        "annotations": {"type": "object"},
    },
}
_METADATA = {"type": "object", "required": ["name"]}
MONITORING_SCHEMA = {
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": _RULE}},
                        },
                    }
                },
            },
        },
    },
    "PodMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "podMetricsEndpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object"},
                    "podMetricsEndpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}

# production includes network-policies already.
OPTIONAL = {"dev": COMPONENTS, "production": tuple(c for c in COMPONENTS if c != "network-policies")}
MIXES = (
    [(overlay, ()) for overlay in OVERLAYS]
    + [(overlay, (component,)) for overlay in OVERLAYS for component in OPTIONAL[overlay]]
    + [("production", OPTIONAL["production"])]
)


@functools.cache
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """kubernetes_validate.validate's strict check, its schemas loaded once per kind (it reads
    and parses them on every call, which made this test ten times slower)."""
    full = [v for v in all_versions() if major_minor(v) <= major_minor(version)][-1]
    folder = f"kubernetes-json-schema/v{full}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{api}.json", version)
    except FileNotFoundError:
        raise kubernetes_validate.SchemaNotFoundError(version=version, kind=kind, api_version=api_version) from None
    registry = Resource.from_contents(schema_contents(f"{folder}/_definitions.json", version)) @ (
        Resource.from_contents(schema) @ Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kubernetes_errors(doc: dict, version: str) -> list[str]:
    return [
        f"{e.message} at {list(e.absolute_path)}"
        for e in _validator(version, doc["kind"], doc["apiVersion"]).iter_errors(doc)
    ]


def mix_id(mix) -> str:
    overlay, components = mix
    return "+".join([overlay, *components])


@pytest.fixture(params=MIXES, ids=mix_id)
def rendered(request, tmp_path) -> tuple[tuple, list[dict]]:
    overlay, components = request.param
    return request.param, render(overlay, components, work_dir=tmp_path / "mix")


def test_renders_and_validates_against_kubernetes_and_keda_schemas(rendered):
    (overlay, components), docs = rendered
    errors = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            errors += [
                f"{where}: {e.message} at {list(e.absolute_path)}"
                for e in jsonschema.Draft202012Validator(MONITORING_SCHEMA[doc["kind"]]).iter_errors(doc)
            ]
            continue
        if doc["apiVersion"].startswith("keda.sh/"):
            errors += [
                f"{where}: {e.message} at {list(e.absolute_path)}"
                for e in jsonschema.Draft202012Validator(KEDA_SCHEMA[doc["kind"]]).iter_errors(doc)
            ]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                errors += [f"{where} (Kubernetes {version}): {e}" for e in kubernetes_errors(doc, version)]
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{where}: no Kubernetes {version} schema for {doc['apiVersion']} {doc['kind']}")
    assert not errors, "\n".join(errors)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"agentry"}


def test_keda_scales_workers_on_the_run_queue_and_replaces_the_cpu_hpa(tmp_path):
    docs = render("production", ("keda",), work_dir=tmp_path / "mix")
    scaled = by_kind(docs, "ScaledObject")["runner-worker"]
    hpa_targets = [h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler").values()]
    assert "runner-worker" not in hpa_targets, "two autoscalers would fight over the workers"
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind(docs, "Deployment")
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "rabbitmq"
        jsonschema.validate(trigger["metadata"], KEDA_SCHEMA["rabbitmq-trigger-metadata"])
        assert trigger["metadata"]["queueName"] == by_kind(docs, "ConfigMap")["agentry-config"]["data"]["queue-name"]
        auth = by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"host"}
    # The HPA behaviour KEDA passes on is Kubernetes' own: validate it with Kubernetes' schema.
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert not kubernetes_errors(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2, "behavior": behavior},
        },
        KUBERNETES_VERSIONS[0],
    )


def test_the_validators_do_refuse_a_wrong_field(tmp_path):
    """A misspelt probe field and a misspelt ScaledObject field are caught (the checks bite)."""
    docs = render("production", ("keda",), work_dir=tmp_path / "mix")
    deployment = copy.deepcopy(by_kind(docs, "Deployment")["auth"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    assert kubernetes_errors(deployment, KUBERNETES_VERSIONS[0])
    with pytest.raises(kubernetes_validate.ValidationError):  # the library's own entry point agrees
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    scaled = copy.deepcopy(by_kind(docs, "ScaledObject")["runner-worker"])
    scaled["spec"]["maxReplicas"] = 3
    assert list(jsonschema.Draft202012Validator(KEDA_SCHEMA["ScaledObject"]).iter_errors(scaled))


def test_alerts_and_monitors_use_what_the_services_export(tmp_path):
    """Every metric an alert reads is one a service defines, and every PodMonitor scrapes a
    declared container port of the pods it selects."""
    root = Path(__file__).resolve().parents[2]
    defined = set()
    for source in [*root.glob("services/*/src/**/*.py"), *root.glob("libs/*/src/**/*.py")]:
        defined |= set(re.findall(r'family\(\s*"(?:counter|gauge|histogram)",\s*"([a-z_:]+)"', source.read_text()))
    assert {"agentry_runs_finished_total", "grpc_server_handled_total", "agentry_dependency_up"} <= defined
    docs = render("production", ("monitoring",), work_dir=tmp_path / "mix")
    used = set()
    for rule in by_kind(docs, "PrometheusRule")["agentry"]["spec"]["groups"]:
        for item in rule["rules"]:
            used |= set(re.findall(r"\b((?:agentry|grpc)_[a-z_]+)", item["expr"]))
    used -= {"grpc_service", "grpc_method", "grpc_type", "grpc_code"}  # label names, not metrics
    assert used and not {re.sub(r"_(bucket|count|sum)$", "", name) for name in used} - defined
    deployments = by_kind(docs, "Deployment")
    for monitor in by_kind(docs, "PodMonitor").values():
        selector = monitor["spec"]["selector"]
        names = {v for e in selector.get("matchExpressions", []) for v in e["values"]} | {
            selector.get("matchLabels", {}).get("app.kubernetes.io/name")
        } - {None}
        for name in names:
            ports = {
                p.get("name")
                for c in deployments[name]["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports, f"{name} has no port {endpoint['port']}"
