"""The evidence bundle: what `perfloop-platform evidence` writes, verifies and compares.

    evidence.json              claims with their checks, findings (URN, pointer, value), the grants
                               ledger and every resource's settings (schema:
                               policies/schemas/evidence.schema.json)
    assessment-results.json    the same as OSCAL assessment results
    report.md, report.html     for people (the HTML is self-contained)
    manifest.json              SHA-256 and size of each file above
    manifest.sig, manifest.pub.pem   optional Ed25519 signature over manifest.json, and its key

Reproducible: every JSON file is RFC 8785 canonical JSON, and nothing comes from the clock: the
timestamp is the export's own (`deployment.manifest.time`) or, for a plan, the commit's. The same
input at the same commit gives byte-identical files. Secret values never arrive here: the view
redacts them before any check runs.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import infra
from infra.errors import ConfigError
from infra.evidence import oscal
from infra.evidence.claims import CLAIM_NOT_APPLICABLE, HOLDS, NOT_ASSESSED, VIOLATED, ClaimResult, evaluate
from infra.evidence.ledger import build_ledger
from infra.evidence.view import ABSENT, StackView, read_state, thaw

EVIDENCE_FORMAT = "perfloop-evidence/v1"
MANIFEST_FORMAT = "perfloop-evidence-manifest/v1"
EVIDENCE, OSCAL, REPORT_MD, REPORT_HTML = "evidence.json", "assessment-results.json", "report.md", "report.html"
MANIFEST, SIGNATURE, PUBLIC_KEY = "manifest.json", "manifest.sig", "manifest.pub.pem"
BUNDLE_FILES = (EVIDENCE, OSCAL, REPORT_MD, REPORT_HTML)
EPOCH = "1970-01-01T00:00:00Z"
REPO_ROOT = Path(__file__).resolve().parents[2]
STATUSES = (HOLDS, VIOLATED, CLAIM_NOT_APPLICABLE, NOT_ASSESSED)


def canonical(document: Any) -> bytes:
    return rfc8785.dumps(document)


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def git_commit() -> str:
    return _git("rev-parse", "HEAD") or "unknown"


def _utc(text: Any) -> Optional[str]:
    """An ISO-8601 time as UTC with at most microseconds (Pulumi writes nanoseconds), or None."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text) if isinstance(text, str) else None
    if not match:
        return None
    when = datetime.fromisoformat(match.group(1) + (match.group(2) or "")[:7] + match.group(3).replace("Z", "+00:00"))
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Source:
    kind: str  # plan | state
    stack: str
    project: str
    timestamp: str


def _stack_names(view: StackView) -> tuple[str, str]:
    parts = (view.stack_urn or (view.resources[0].urn if view.resources else "urn:pulumi:unknown::unknown")).split("::")
    return parts[0].removeprefix("urn:pulumi:"), parts[1]


def plan_source(stack: str) -> tuple[StackView, Source]:
    from infra.evidence.view import plan_view

    view = plan_view(stack)
    name, project = _stack_names(view)
    return view, Source("plan", name, project, _utc(_git("show", "-s", "--format=%cI", "HEAD")) or EPOCH)


def state_source(path: Path) -> tuple[StackView, Source]:
    source = f"state export {path}"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(source, ["file does not exist; write it with `pulumi stack export --file PATH`"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot be read: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(source, [f"not valid JSON: {exc}"]) from None
    view = read_state(document, source)
    name, project = _stack_names(view)
    manifest = document["deployment"].get("manifest")
    return view, Source("state", name, project, _utc(manifest.get("time") if isinstance(manifest, dict) else None) or EPOCH)


def evidence_document(view: StackView, source: Source, results: Optional[list[ClaimResult]] = None) -> dict[str, Any]:
    results = results if results is not None else evaluate(view)
    resources = [r.to_json() for r in view.resources]

    def export(name: str) -> Any:
        value = view.output(name)
        return None if value is ABSENT else thaw(value)

    return {
        "format": EVIDENCE_FORMAT,
        "generator": {"name": "perfloop-platform", "version": infra.__version__, "commit": git_commit()},
        "source": {
            "kind": source.kind,
            "stack": source.stack,
            "project": source.project,
            "timestamp": source.timestamp,
            # Identifies the input: SHA-256 of the canonical JSON of every resource's settings.
            "digest": hashlib.sha256(canonical(resources)).hexdigest(),
        },
        "stack": {name: export(name) for name in ("shape", "project", "region", "loosenings")},
        "summary": {status: sum(r.status == status for r in results) for status in STATUSES},
        "claims": [r.to_json() for r in results],
        "ledger": build_ledger(view),
        "resources": resources,
    }


# --- reports ------------------------------------------------------------------------------------

def _value(finding: dict[str, Any]) -> str:
    return json.dumps(finding["actual"], sort_keys=True) if "actual" in finding else "(absent)"


def _short(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] or urn


def render_markdown(evidence: dict[str, Any]) -> str:
    src, gen, stack = evidence["source"], evidence["generator"], evidence["stack"]
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    lines = [
        f"# Perfloop security claims: {src['stack']}",
        "",
        f"Source: {src['kind']} of `{src['project']}/{src['stack']}` at {src['timestamp']} (input SHA-256 `{src['digest']}`)  ",
        f"Generator: perfloop-platform {gen['version']}, commit `{gen['commit']}`  ",
        f"Stack: project `{stack['project']}`, region `{stack['region']}`, shape `{stack['shape']}`  ",
        f"Loosenings: {', '.join(stack['loosenings'] or []) or 'none'}",
        "",
        " · ".join(f"{n} {s}" for s, n in evidence["summary"].items()),
        "",
        "| claim | status | title | TSC | enforced by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in evidence["claims"]:
        lines.append(f"| {c['id']} | {c['status']} | {cell(c['title'])} | {', '.join(c['tsc'])} | {c['enforcement']['kind']} ({c['enforcement']['mechanism']}) |")
    for c in evidence["claims"]:
        lines += ["", f"## {c['id']} — {c['status']}: {c['title']}", "", f"> {c['quote']}", "", f"Enforced by {c['enforcement']['kind']} ({c['enforcement']['mechanism']}): {c['enforcement']['how']}"]
        if c["reason"]:
            lines += ["", f"Reason: {c['reason']}"]
        if c["loosenings"]:
            lines += ["", f"Loosenings in effect: {', '.join(c['loosenings'])}"]
        if c["awaiting"]:
            lines += ["", f"Awaiting the {c['awaiting']['layer']} layer:"] + [f"- `{p['name']}`: {p['needs']}" for p in c["awaiting"]["checks"]]
        for check in c["checks"]:
            lines += ["", f"### `{check['check']}` — {check['status']}", "", "| ok | resource | path | actual | required |", "| --- | --- | --- | --- | --- |"]
            for f in sorted(check["findings"], key=lambda f: f["ok"]):
                lines.append(f"| {'✓' if f['ok'] else '✗'} | {cell(_short(f['urn']))} | `{cell(f['path'] or '(resource)')}` | `{cell(_value(f))}` | {cell(f['required'])} |")
    lines += ["", "## The access you granted", ""]
    for principal, sections in evidence["ledger"].items():
        lines.append(f"- **{principal}**")
        for section, entries in sections.items():
            for e in entries:
                lines.append(f"  - {section}: " + ", ".join(f"{k}={v}" for k, v in e.items() if k != "urn") + f" ({_short(e['urn'])})")
        if not any(sections.values()):
            lines.append("  - nothing")
    return "\n".join(lines) + "\n"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1b1f24;padding:0 1rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .4rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}code{font:12px ui-monospace,monospace;word-break:break-all}blockquote{border-left:3px solid #d0d7de;margin:.5rem 0;padding-left:.8rem;color:#57606a}
.holds{color:#1a7f37}.violated{color:#cf222e;font-weight:bold}.not-applicable,.not-assessed{color:#9a6700}.bad{background:#ffebe9}
details{margin:.3rem 0}summary{cursor:pointer}"""


def render_html(evidence: dict[str, Any]) -> str:
    e = html.escape
    src, gen, stack = evidence["source"], evidence["generator"], evidence["stack"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Perfloop security claims: {e(src['stack'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Perfloop security claims: {e(src['stack'])}</h1>",
        f"<p>Source: {e(src['kind'])} of <code>{e(src['project'])}/{e(src['stack'])}</code> at {e(src['timestamp'])}<br>"
        f"Input SHA-256 <code>{e(src['digest'])}</code><br>Generator: perfloop-platform {e(gen['version'])}, commit <code>{e(gen['commit'])}</code><br>"
        f"Stack: project <code>{e(str(stack['project']))}</code>, region <code>{e(str(stack['region']))}</code>, shape <code>{e(str(stack['shape']))}</code><br>"
        f"Loosenings: {e(', '.join(stack['loosenings'] or []) or 'none')}</p>",
        "<p>" + " · ".join(f'<span class="{e(s)}">{n} {e(s)}</span>' for s, n in evidence["summary"].items()) + "</p>",
        "<table><tr><th>claim</th><th>status</th><th>title</th><th>TSC</th><th>enforced by</th></tr>",
    ]
    for c in evidence["claims"]:
        out.append(
            f'<tr><td><a href="#{e(c["id"])}">{e(c["id"])}</a></td><td class="{e(c["status"])}">{e(c["status"])}</td><td>{e(c["title"])}</td>'
            f"<td>{e(', '.join(c['tsc']))}</td><td>{e(c['enforcement']['kind'])} ({e(c['enforcement']['mechanism'])})</td></tr>"
        )
    out.append("</table>")
    for c in evidence["claims"]:
        out += [
            f'<h2 id="{e(c["id"])}">{e(c["id"])} <span class="{e(c["status"])}">{e(c["status"])}</span>: {e(c["title"])}</h2>',
            f"<blockquote>{e(c['quote'])}</blockquote>",
            f"<p>Enforced by {e(c['enforcement']['kind'])} ({e(c['enforcement']['mechanism'])}): {e(c['enforcement']['how'])}</p>",
        ]
        if c["reason"]:
            out.append(f"<p>Reason: {e(c['reason'])}</p>")
        if c["loosenings"]:
            out.append(f"<p><strong>Loosenings in effect:</strong> {e(', '.join(c['loosenings']))}</p>")
        if c["awaiting"]:
            out.append(f"<p>Awaiting the {e(c['awaiting']['layer'])} layer:</p><ul>" + "".join(f"<li><code>{e(p['name'])}</code>: {e(p['needs'])}</li>" for p in c["awaiting"]["checks"]) + "</ul>")
        for check in c["checks"]:
            failing = sum(not f["ok"] for f in check["findings"])
            out.append(f"<details{' open' if failing else ''}><summary><code>{e(check['check'])}</code>: <span class=\"{'violated' if failing else 'holds'}\">{e(check['status'])}</span> ({len(check['findings'])} findings, {failing} failing)</summary>")
            out.append("<table><tr><th>ok</th><th>resource</th><th>path</th><th>actual</th><th>required</th></tr>")
            for f in sorted(check["findings"], key=lambda f: f["ok"]):
                row = "<tr>" if f["ok"] else '<tr class="bad">'
                out.append(
                    f"{row}<td>{'✓' if f['ok'] else '✗'}</td><td><code title=\"{e(f['urn'])}\">{e(_short(f['urn']))}</code></td>"
                    f"<td><code>{e(f['path'] or '(resource)')}</code></td><td><code>{e(_value(f))}</code></td><td>{e(f['required'])}</td></tr>"
                )
            out.append("</table></details>")
    out.append("<h2>The access you granted</h2><table><tr><th>principal</th><th>grants</th></tr>")
    for principal, sections in evidence["ledger"].items():
        items = [f"{section}: " + ", ".join(f"{k}={v}" for k, v in entry.items() if k != "urn") for section, entries in sections.items() for entry in entries]
        out.append(f"<tr><td><code>{e(principal)}</code></td><td>{'<br>'.join(e(i) for i in items) or 'nothing'}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


# --- writing, signing, verifying ----------------------------------------------------------------

def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key: PEM (PKCS#8), or the raw 32-byte seed (binary or hex)."""
    source = f"signing key {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        elif len(data) == 32:
            key = Ed25519PrivateKey.from_private_bytes(data)
        else:
            key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data.decode().strip()))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"not an unencrypted Ed25519 private key (PEM, or 32 raw or hex bytes): {exc}"]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(source, [f"is a {type(key).__name__}, not an Ed25519 key"])
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    source = f"public key {path}"
    try:
        data = path.read_bytes()
        key = serialization.load_pem_public_key(data) if b"-----BEGIN" in data else Ed25519PublicKey.from_public_bytes(data)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(source, [f"not an Ed25519 public key (PEM or 32 raw bytes): {exc}"]) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(source, [f"is a {type(key).__name__}, not an Ed25519 key"])
    return key


def write_bundle(evidence: dict[str, Any], out: Path, signing_key: Optional[Ed25519PrivateKey] = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for name in (*BUNDLE_FILES, MANIFEST, SIGNATURE, PUBLIC_KEY):
        (out / name).unlink(missing_ok=True)  # a stale signature must not outlive its manifest
    contents = {
        EVIDENCE: canonical(evidence),
        OSCAL: canonical(oscal.document(evidence)),
        REPORT_MD: render_markdown(evidence).encode(),
        REPORT_HTML: render_html(evidence).encode(),
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in sorted(contents.items())},
    }
    contents[MANIFEST] = canonical(manifest)
    if signing_key is not None:
        contents[SIGNATURE] = base64.b64encode(signing_key.sign(contents[MANIFEST])) + b"\n"
        contents[PUBLIC_KEY] = signing_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for name, data in contents.items():
        (out / name).write_bytes(data)
    return [out / name for name in contents]


def verify_bundle(bundle: Path, public_key: Optional[Ed25519PublicKey] = None) -> list[str]:
    """Problems with a bundle (empty: intact). Every file must match the manifest and no other
    file may be present; a signature, if present or if a key is given, must verify: with the given
    key (authenticity) or else with the bundled one (integrity only)."""
    try:
        manifest_bytes = (bundle / MANIFEST).read_bytes()
        manifest = json.loads(manifest_bytes)
        files = manifest["files"]
        assert manifest["format"] == MANIFEST_FORMAT and isinstance(files, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        return [f"{MANIFEST}: missing or not a {MANIFEST_FORMAT} manifest ({exc!r})"]
    problems = []
    for name, expected in sorted(files.items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected.get("sha256") or len(data) != expected.get("bytes"):
            problems.append(f"{name}: SHA-256 or size differs from the manifest (the file was changed)")
    extra = sorted(p.name for p in bundle.iterdir() if p.name not in files and p.name not in (MANIFEST, SIGNATURE, PUBLIC_KEY))
    problems += [f"{name}: not in the manifest" for name in extra]
    signature_path = bundle / SIGNATURE
    if signature_path.exists():
        try:
            key = public_key or load_public_key(bundle / PUBLIC_KEY)
            key.verify(base64.b64decode(signature_path.read_bytes().strip(), validate=True), manifest_bytes)
        except (InvalidSignature, ValueError, ConfigError) as exc:
            problems.append(f"{SIGNATURE}: does not verify over {MANIFEST} with {'the given' if public_key else 'the bundled'} public key ({type(exc).__name__})")
    elif public_key is not None:
        problems.append(f"{SIGNATURE}: missing, yet a public key was given to verify it")
    return problems


# --- comparing ----------------------------------------------------------------------------------

def load_evidence(path: Path) -> dict[str, Any]:
    file = path / EVIDENCE if path.is_dir() else path
    source = f"evidence {file}"
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(source, ["does not exist; give a bundle directory or its evidence.json"]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(source, [f"cannot be read as JSON: {exc}"]) from None
    if not isinstance(document, dict) or document.get("format") != EVIDENCE_FORMAT:
        raise ConfigError(source, [f"not a {EVIDENCE_FORMAT} document"])
    return document


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{path}/{key.replace('~', '~0').replace('/', '~1')}").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{path}/{i}").items()}
    return {path: value}


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Claim status changes and per-resource setting changes between two evidence documents.
    A regression is a claim that held and now does not (violated, not assessed, or gone);
    becoming not-applicable is not one (the thing it spoke about is gone)."""
    old = {c["id"]: c["status"] for c in before["claims"]}
    new = {c["id"]: c["status"] for c in after["claims"]}
    changes = [{"claim": i, "before": old.get(i), "after": new.get(i)} for i in sorted(old.keys() | new.keys()) if old.get(i) != new.get(i)]
    regressions = [c for c in changes if c["before"] == HOLDS and c["after"] != CLAIM_NOT_APPLICABLE]
    new_passes = [c for c in changes if c["after"] == HOLDS]
    a = {r["urn"]: _leaves({k: v for k, v in r.items() if k != "urn"}) for r in before["resources"]}
    b = {r["urn"]: _leaves({k: v for k, v in r.items() if k != "urn"}) for r in after["resources"]}
    changed = {}
    for urn in sorted(a.keys() & b.keys()):
        paths = sorted(a[urn].keys() | b[urn].keys())
        delta = [{"path": p, "before": a[urn].get(p), "after": b[urn].get(p)} for p in paths if a[urn].get(p, ABSENT) != b[urn].get(p, ABSENT)]
        if delta:
            changed[urn] = delta
    return {
        "regressions": regressions,
        "new_passes": new_passes,
        "status_changes": changes,
        "resources": {"added": sorted(b.keys() - a.keys()), "removed": sorted(a.keys() - b.keys()), "changed": changed},
    }


def render_diff(result: dict[str, Any]) -> str:
    lines = []
    for title, key in (("REGRESSIONS (held before, not now)", "regressions"), ("new passes", "new_passes"), ("claim status changes", "status_changes")):
        lines.append(f"{title}: {len(result[key])}")
        lines += [f"  {c['claim']}: {c['before']} -> {c['after']}" for c in result[key]]
    res = result["resources"]
    lines += [f"resources added: {len(res['added'])}"] + [f"  + {u}" for u in res["added"]]
    lines += [f"resources removed: {len(res['removed'])}"] + [f"  - {u}" for u in res["removed"]]
    lines.append(f"resources changed: {len(res['changed'])}")
    for urn, delta in res["changed"].items():
        lines.append(f"  ~ {urn}")
        lines += [f"      {d['path']}: {json.dumps(d['before'])} -> {json.dumps(d['after'])}" for d in delta]
    return "\n".join(lines) + "\n"
