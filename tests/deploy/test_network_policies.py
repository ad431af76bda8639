"""The network policies allow exactly the connections the manifests wire: every `<service>:<port>`
a container is configured to call is open both ways (its egress, the callee's ingress), only the
gateway takes ingress from anywhere, and a service never accepts a caller it does not have."""

from __future__ import annotations

import re

import pytest

from .manifests import by_kind, containers, pod_spec, render, secret_template


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def port_ok(rule: dict, port: int) -> bool:
    return not rule.get("ports") or any(p.get("port") == port for p in rule["ports"])


def allows(policies: list[dict], direction: str, pod: dict, peer: dict | None, port: int) -> bool:
    """True when the policies that select `pod` let traffic through in `direction` (ingress from
    `peer`, or egress to it; `peer` None: a destination outside the namespace's pods)."""
    relevant = [
        p
        for p in policies
        if selects(p["spec"]["podSelector"], pod) and direction.capitalize() in p["spec"]["policyTypes"]
    ]
    if not relevant:
        return True  # not isolated in this direction
    for policy in relevant:
        for rule in policy["spec"].get(direction, []):
            peers = rule.get("from" if direction == "ingress" else "to")
            if not port_ok(rule, port):
                continue
            if not peers:
                return True
            for p in peers:
                if (
                    peer is not None
                    and "podSelector" in p
                    and "namespaceSelector" not in p
                    and selects(p["podSelector"], peer)
                ):
                    return True
                if peer is None and "ipBlock" in p:
                    return True
    return False


@pytest.fixture(
    scope="module",
    params=[("production", ()), ("dev", ("network-policies",))],
    ids=["production", "dev+network-policies"],
)
def wiring(request, tmp_path_factory):
    overlay, components = request.param
    docs = render(overlay, components, work_dir=tmp_path_factory.mktemp("mix"))
    policies = list(by_kind(docs, "NetworkPolicy").values())
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in by_kind(docs, "Deployment").items()}
    services = by_kind(docs, "Service")
    calls = set()  # (caller Deployment, callee Deployment, port)
    for c in containers(docs, secrets={"agentry-secrets": secret_template()}):
        if c.workload["kind"] != "Deployment":
            continue
        for value in (v for v in c.env.values() if v):
            for host, port in re.findall(r"(?:^|@|//)([a-z][a-z0-9-]*):(\d+)", value):
                if host in services:
                    selector = {"matchLabels": services[host]["spec"]["selector"]}
                    callee = next(name for name, lab in labels.items() if selects(selector, lab))
                    calls.add((c.workload["metadata"]["name"], callee, int(port)))
    return docs, policies, labels, calls


def test_every_configured_call_is_allowed_both_ways(wiring):
    _, policies, labels, calls = wiring
    assert ("gateway", "runner-api", 50054) in calls and ("runner-worker", "sandbox", 50053) in calls
    problems = []
    for caller, callee, port in sorted(calls):
        if not allows(policies, "egress", labels[caller], labels[callee], port):
            problems.append(f"{caller} may not send to {callee}:{port}")
        if not allows(policies, "ingress", labels[callee], labels[caller], port):
            problems.append(f"{callee} does not accept {caller} on {port}")
    assert not problems, "\n".join(problems)


def test_services_accept_only_their_callers_and_only_workers_reach_the_internet(wiring):
    docs, policies, labels, calls = wiring
    problems = []
    for callee, spec in by_kind(docs, "Deployment").items():
        if labels[callee].get("app.kubernetes.io/component") == "infrastructure":
            continue  # the dev overlay's PostgreSQL, Redis and RabbitMQ serve every Agentry pod
        ports = [p["containerPort"] for ct in pod_spec(spec)["containers"] for p in ct.get("ports", [])]
        callers = {caller for caller, to, _ in calls if to == callee}
        for other in labels:
            if other == callee or other in callers:
                continue
            for port in ports:
                if callee != "gateway" and allows(policies, "ingress", labels[callee], labels[other], port):
                    problems.append(f"{callee}:{port} accepts {other}, which never calls it")
        reaches_out = allows(policies, "egress", labels[callee], None, 443)
        if reaches_out != (callee == "runner-worker"):
            problems.append(f"{callee}: internet egress {'allowed' if reaches_out else 'denied'}")
    assert not problems, "\n".join(problems)
