"""The grants ledger — "the access you granted" — read back from the resources themselves.

Per principal (a workload's Kubernetes service account and the Google service account it acts
as, or a Google service account alone): every Kubernetes RBAC rule bound to it, every project
IAM role, every secret it can read, its database role and its network edges. Built from plan or
state records (`type`, `inputs`), so it shows what is deployed, not what was meant.
"""

from __future__ import annotations

from typing import Any, Iterable

from infra.k8s.analysis import reachability

WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
DATABASE_ROLE_ANNOTATION = "perfloop.ai/database-role"


def _kind(type_: str) -> str:
    return type_.rsplit(":", 1)[-1]


def _members(inputs: dict[str, Any]) -> list[str]:
    return inputs.get("members") or ([inputs["member"]] if "member" in inputs else [])


def ledger(resources: Iterable[Any]) -> dict[str, dict[str, Any]]:
    resources = list(resources)
    principals: dict[str, dict[str, Any]] = {}

    def entry(key: str) -> dict[str, Any]:
        return principals.setdefault(
            key,
            {"kubernetes_service_account": None, "google_service_account": None, "automount_token": None,
             "rbac": [], "gcp_roles": [], "secrets": [], "database_role": None, "network": []},
        )

    by_email: dict[str, str] = {}
    for r in resources:
        if r.type == "gcp:serviceaccount/account:Account":
            email = f"{r.inputs['accountId']}@{r.inputs['project']}.iam.gserviceaccount.com"
            by_email[email] = email
            entry(email)["google_service_account"] = email
    for r in resources:
        if r.type == "kubernetes:core/v1:ServiceAccount":
            meta = r.inputs["metadata"]
            annotations = meta.get("annotations") or {}
            email = annotations.get(WORKLOAD_IDENTITY_ANNOTATION)
            key = f"{meta['namespace']}/{meta['name']}"
            if email in principals:
                principals[key] = principals.pop(email)
                by_email[email] = key
            e = entry(key)
            e.update(
                kubernetes_service_account=key,
                google_service_account=email,
                automount_token=r.inputs.get("automountServiceAccountToken", True),
                database_role=annotations.get(DATABASE_ROLE_ANNOTATION),
            )
    roles = {
        (_kind(r.type), r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"]): r.inputs.get("rules", [])
        for r in resources
        if r.type.startswith("kubernetes:rbac.authorization.k8s.io/v1:") and _kind(r.type) in ("Role", "ClusterRole")
    }
    for r in resources:
        kind = _kind(r.type)
        if r.type.startswith("kubernetes:") and kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = r.inputs["roleRef"]
            namespace = r.inputs["metadata"].get("namespace") if ref["kind"] == "Role" else None
            rules = roles.get((ref["kind"], namespace, ref["name"]), [{"unresolved": ref["name"]}])
            for subject in r.inputs.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    target = entry(f"{subject.get('namespace')}/{subject['name']}")
                    for rule in rules:
                        target["rbac"].append({"scope": namespace or "cluster", **rule})
        elif r.type == "gcp:projects/iAMMember:IAMMember" or r.type == "gcp:projects/iAMBinding:IAMBinding":
            for member in _members(r.inputs):
                email = member.split(":", 1)[-1]
                grant = {"role": r.inputs["role"], "on": f"projects/{r.inputs['project']}"}
                if r.inputs.get("condition"):
                    grant["condition"] = r.inputs["condition"].get("expression")
                entry(by_email.get(email, email))["gcp_roles"].append(grant)
        elif r.type in ("gcp:secretmanager/secretIamBinding:SecretIamBinding", "gcp:secretmanager/secretIamMember:SecretIamMember"):
            for member in _members(r.inputs):
                email = member.split(":", 1)[-1]
                entry(by_email.get(email, email))["secrets"].append({"secret": r.inputs["secretId"], "role": r.inputs["role"]})
    for edge in reachability(resources):
        key = f"{edge.source_namespace}/{edge.source}"
        if key in principals:
            where = f"{edge.destination}.{edge.destination_namespace}" if edge.destination_namespace else edge.destination
            principals[key]["network"].append(f"{where}:{edge.port}/{edge.protocol}")
    for e in principals.values():
        e["gcp_roles"].sort(key=lambda g: (g["role"], g.get("condition") or ""))
        e["secrets"].sort(key=lambda s: s["secret"])
        e["rbac"].sort(key=lambda g: repr(sorted(g.items())))
    return dict(sorted(principals.items()))


def render_grants(principals: dict[str, dict[str, Any]]) -> str:
    lines = []
    for key, e in principals.items():
        lines.append(key + (f"  (acts as {e['google_service_account']})" if e["kubernetes_service_account"] and e["google_service_account"] else ""))
        if e["kubernetes_service_account"]:
            lines.append(f"  kubernetes token mounted: {'yes' if e['automount_token'] else 'no'}")
        for rule in e["rbac"]:
            lines.append(f"  rbac [{rule['scope']}]: {','.join(rule.get('verbs', []))} {','.join(rule.get('resources', []))} (apiGroups {rule.get('apiGroups')})")
        for grant in e["gcp_roles"]:
            lines.append(f"  gcp role: {grant['role']} on {grant['on']}" + (f" if {grant['condition']}" if grant.get("condition") else ""))
        for secret in e["secrets"]:
            lines.append(f"  secret: {secret['secret']} ({secret['role']})")
        if e["database_role"]:
            lines.append(f"  database role: {e['database_role']}")
        for edge in e["network"]:
            lines.append(f"  network: {edge}")
        if not any(e[k] for k in ("rbac", "gcp_roles", "secrets", "database_role", "network")):
            lines.append("  nothing")
    return "\n".join(lines) + "\n"
