"""The grants ledger: "the access you granted", per principal, read back from the resources.

Each layer contributes entries per principal and section; `build_ledger` merges them. Principals
are named as the system that authorises them names them: Google principals by IAM member
(`serviceAccount:<email>`), Kubernetes service accounts by RBAC user name
(`system:serviceaccount:<namespace>:<name>`). Every entry carries the URN of the resource that
grants it.

Sections:
  iam_roles            GCP roles, with the scope they are granted on and any condition
  secrets              Secret Manager secrets the principal can read
  database             Cloud SQL logins (IAM database users) and, from the Kubernetes layer, roles
  acts_as / usable_by  Workload Identity, from both ends
  rbac                 Kubernetes RBAC rules (Kubernetes layer)
  network              network edges the principal's pods may open (Kubernetes layer)
  egress_destinations  internet hosts the principal may reach through the proxy (egress policy)
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from infra.evidence.policies import SERVICE_ACCOUNT, SQL_USER, grants
from infra.evidence.view import StackView, thaw
from infra.evidence.kubernetes_checks import records_of
from infra.k8s.analysis import rbac_grants, reachability
from infra.naming import DATABASE_ROLE_ANNOTATION

SECTIONS = ("iam_roles", "secrets", "database", "acts_as", "usable_by", "rbac", "network", "egress_destinations")

Layer = Callable[[StackView], dict[str, dict[str, list[dict[str, Any]]]]]

_WORKLOAD_MEMBER = re.compile(r"^serviceAccount:[^\[]+\.svc\.id\.goog\[(?P<ns>[^/\]]+)/(?P<ksa>[^\]]+)\]$")


def gcp_grants(view: StackView) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The GCP layer: IAM roles at every scope, secret accessors, Cloud SQL IAM users and
    Workload Identity."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add(principal: str, section: str, entry: dict[str, Any]) -> None:
        out.setdefault(principal, {}).setdefault(section, []).append(entry)

    for a in view.of_type(SERVICE_ACCOUNT):
        out.setdefault(f"serviceAccount:{a.at('/accountId')}@{a.at('/project')}.iam.gserviceaccount.com", {})
    for g in grants(view):
        for member, _ in g.members:
            member = str(thaw(member))
            if g.scope == "secret":
                add(member, "secrets", {"secret": thaw(g.resource.at("/secretId")), "role": g.role, "urn": g.resource.urn})
            elif g.scope == "service-account":
                account = str(thaw(g.resource.at("/serviceAccountId"))).rsplit("/", 1)[-1]
                workload = _WORKLOAD_MEMBER.match(member)
                principal = f"system:serviceaccount:{workload['ns']}:{workload['ksa']}" if workload else member
                add(principal, "acts_as", {"principal": f"serviceAccount:{account}", "role": g.role, "urn": g.resource.urn})
                add(f"serviceAccount:{account}", "usable_by", {"principal": principal, "role": g.role, "urn": g.resource.urn})
            else:
                on = f"projects/{g.resource.at('/project')}" if g.scope == "project" else g.scope
                entry = {"role": g.role, "on": on, "urn": g.resource.urn}
                if isinstance(g.condition, str):
                    entry["condition"] = g.condition
                add(member, "iam_roles", entry)
    for u in view.of_type(SQL_USER):
        if u.at("/type") == "CLOUD_IAM_SERVICE_ACCOUNT":
            # Cloud SQL names a service account's IAM user by its e-mail without ".gserviceaccount.com".
            add(f"serviceAccount:{u.at('/name')}.gserviceaccount.com", "database", {"login": u.at("/name"), "instance": u.at("/instance"), "urn": u.urn})
        else:
            add(f"database-user:{u.at('/name')}", "database", {"login": u.at("/name"), "instance": u.at("/instance"), "type": thaw(u.at("/type")), "urn": u.urn})
    return out


def kubernetes_grants(view: StackView) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The Kubernetes layer: RBAC rules through their bindings, the database role a workload's
    identity maps to, and the connections its pods may open (from the NetworkPolicies)."""
    records = records_of(view)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add(principal: str, section: str, entry: dict[str, Any]) -> None:
        out.setdefault(principal, {}).setdefault(section, []).append(entry)

    accounts = set()
    for r in records:
        if r.type == "kubernetes:core/v1:ServiceAccount":
            meta = r.inputs["metadata"]
            principal = f"system:serviceaccount:{meta['namespace']}:{meta['name']}"
            accounts.add((meta["namespace"], meta["name"]))
            out.setdefault(principal, {})
            role = (meta.get("annotations") or {}).get(DATABASE_ROLE_ANNOTATION)
            if role:
                add(principal, "database", {"role": role, "urn": r.urn})
    for g in rbac_grants(records):
        add(
            f"system:serviceaccount:{g.subject[0]}:{g.subject[1]}",
            "rbac",
            {"scope": g.scope, "apiGroups": list(g.api_groups), "resources": list(g.resources), "verbs": list(g.verbs), "urn": g.binding_urn, "role_urn": g.role_urn},
        )
    # An edge is evidenced by the workload's egress policy (infra/k8s/manifests.py names it).
    egress_policies = {
        (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r.urn
        for r in records
        if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"
    }
    for e in reachability(records):
        # Pods run as the service account named like their workload (infra/k8s/manifests.py).
        if (e.source_namespace, e.source) in accounts:
            destination = f"{e.destination}.{e.destination_namespace}" if e.destination_namespace else e.destination
            urn = egress_policies.get((e.source_namespace, f"{e.source}-egress"), view.stack_urn)
            add(f"system:serviceaccount:{e.source_namespace}:{e.source}", "network", {"to": destination, "port": e.port, "protocol": e.protocol, "urn": urn})
    return out


def egress_grants(view: StackView) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The egress policy as deployed: per workload, the internet hosts the proxy lets it reach —
    platform destinations (subprocessors) from the cell's policy data, and per workspace the code
    host for its sandboxes and each telemetry source for its connector."""
    from infra.evidence.egress_checks import deployment

    d = deployment(view)
    if d.data is None or d.policy is None:
        return {}
    accounts: dict[str, list[str]] = {}
    for r in view.of_type("kubernetes:core/v1:ServiceAccount"):
        meta = r.inputs["metadata"]
        accounts.setdefault(meta["name"], []).append(f"system:serviceaccount:{meta['namespace']}:{meta['name']}")
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add(principal: str, entry: dict[str, Any]) -> None:
        out.setdefault(principal, {}).setdefault("egress_destinations", []).append(entry)

    for workload, hosts in d.data.get("platform_destinations", {}).items():
        for principal in accounts.get(workload, [f"workload:{workload}"]):
            for host in hosts:
                add(principal, {"host": host, "as": "platform destination", "urn": d.policy.urn})
    for registration in d.registrations:
        ws, entry = registration.workspace, registration.entry
        code_host = entry.get("code_host") or {}
        for key in ("api_host", "git_host"):
            if code_host.get(key):
                add(
                    f"system:serviceaccount:perfloop-sandbox-{ws}:sandbox",
                    {"host": code_host[key], "as": f"code host ({code_host.get('provider')}), repositories {list(code_host.get('repositories', []))}, within each session's grant", "urn": registration.resource.urn},
                )
        for t in entry.get("telemetry") or []:
            add(
                f"system:serviceaccount:perfloop-connectors-{ws}:connector-{t['kind']}",
                {"host": t.get("host"), "as": f"{t['kind']} source ({t['provider']}, {t.get('mode', 'aggregate')} mode)", "urn": registration.resource.urn},
            )
    return out


# The layers the ledger is built from.
LEDGER_LAYERS: tuple[Layer, ...] = (gcp_grants, kubernetes_grants, egress_grants)


def build_ledger(view: StackView, layers: tuple[Layer, ...] = LEDGER_LAYERS) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every principal with every section (empty where nothing is granted), entries sorted."""
    ledger: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for layer in layers:
        for principal, sections in layer(view).items():
            entry = ledger.setdefault(principal, {s: [] for s in SECTIONS})
            for section, entries in sections.items():
                entry[section].extend(entries)
    for entry in ledger.values():
        for section in SECTIONS:
            entry[section] = sorted(entry[section], key=lambda e: json.dumps(e, sort_keys=True))
    return dict(sorted(ledger.items()))


def render_ledger(ledger: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The ledger as text, a principal a paragraph (`plan --show grants`)."""
    lines = []
    for principal, sections in ledger.items():
        lines.append(principal)
        shown = False
        for section in SECTIONS:
            for entry in sections[section]:
                shown = True
                # URNs are for the evidence bundle; the text shows what is granted.
                detail = ", ".join(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in entry.items() if not k.endswith("urn"))
                lines.append(f"  {section}: {detail}")
        if not shown:
            lines.append("  nothing")
    return "\n".join(lines) + "\n"
