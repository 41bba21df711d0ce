"""The evidence bundle: schema-valid, byte-identical across runs, verifiable, signed, OSCAL-valid,
the same from a state export as from the plan (with every secret gone), comparable with diff,
and reached through the `check` and `evidence` commands."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trestle.oscal.assessment_results import AssessmentResults

from infra.evidence.bundle import (
    BUNDLE_FILES, MANIFEST, PUBLIC_KEY, SIGNATURE, Source, evidence_document, load_public_key, verify_bundle, write_bundle,
)
from infra.evidence.claims import evaluate
from infra.evidence.view import read_state

from tests.evidence.conftest import CIPHERTEXT_MARKER, PLAINTEXT_MARKER, SALT_MARKER, run_cli, state_export

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "policies" / "schemas" / "evidence.schema.json").read_text())
SOURCE = Source("plan", "byoc-example", "perfloop-platform", "2025-01-02T03:04:05Z")


@pytest.fixture(scope="module")
def evidence(view):
    return evidence_document(view, SOURCE)


@pytest.fixture
def bundle(tmp_path, evidence):
    write_bundle(evidence, tmp_path / "bundle")
    return tmp_path / "bundle"


def test_evidence_validates_against_its_published_schema(evidence):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(evidence)
    assert evidence["summary"]["violated"] == 0 and evidence["source"]["kind"] == "plan"


def test_ledger_lists_the_access_granted(evidence):
    ledger = evidence["ledger"]
    proxy = ledger["serviceAccount:pf-egress-proxy@acme-perfloop-prod.iam.gserviceaccount.com"]
    assert [s["secret"] for s in proxy["secrets"]] == ["perfloop-code-host-app-key"]
    assert [u["principal"] for u in proxy["usable_by"]] == ["system:serviceaccount:perfloop-egress:egress-proxy"]
    assert ledger["system:serviceaccount:perfloop-egress:egress-proxy"]["acts_as"][0]["principal"].startswith("serviceAccount:pf-egress-proxy@")
    orchestrator = ledger["serviceAccount:pf-agent-orchestrator@acme-perfloop-prod.iam.gserviceaccount.com"]
    assert {g["role"] for g in orchestrator["iam_roles"]} == {"roles/aiplatform.user", "roles/cloudsql.client", "roles/cloudsql.instanceUser"}
    assert orchestrator["database"][0]["login"] == "pf-agent-orchestrator@acme-perfloop-prod.iam"
    assert all(set(entry) == set(proxy) for entry in ledger.values())


def test_bundle_is_byte_identical_across_runs(tmp_path, view):
    first, second = tmp_path / "a", tmp_path / "b"
    write_bundle(evidence_document(view, SOURCE), first)
    write_bundle(evidence_document(view, SOURCE), second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted([*BUNDLE_FILES, MANIFEST])
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)


def test_manifest_verifies_and_fails_after_tampering(bundle):
    assert verify_bundle(bundle) == []
    report = bundle / "report.md"
    report.write_bytes(report.read_bytes().replace(b"violated", b"violatex", 1))
    assert verify_bundle(bundle) == ["report.md: SHA-256 or size differs from the manifest (the file was changed)"]
    (bundle / "extra.txt").write_text("x")
    assert "extra.txt: not in the manifest" in verify_bundle(bundle)


@pytest.mark.parametrize("encoding", ["pem", "raw", "hex"])
def test_signature_verifies_and_fails_with_a_wrong_key(tmp_path, evidence, encoding):
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    data = {
        "pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "raw": raw,
        "hex": raw.hex().encode() + b"\n",
    }[encoding]
    (tmp_path / "key").write_bytes(data)
    assert run_cli("evidence", "--state", str(_export(tmp_path)), "--out", str(tmp_path / "signed"), "--signing-key", str(tmp_path / "key")) == 0
    signed = tmp_path / "signed"
    assert (signed / SIGNATURE).exists() and raw.hex() not in "".join(p.read_bytes().hex() for p in signed.iterdir())
    public = tmp_path / "public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert verify_bundle(signed, load_public_key(public)) == []
    assert run_cli("evidence", "verify", str(signed), "--public-key", str(public)) == 0
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert verify_bundle(signed, load_public_key(wrong)) == [f"{SIGNATURE}: does not verify over {MANIFEST} with the given public key (InvalidSignature)"]
    assert run_cli("evidence", "verify", str(signed), "--public-key", str(wrong)) == 1
    # Re-signed by someone else with their own bundled key: integrity holds, authenticity does not.
    impostor = Ed25519PrivateKey.generate()
    (signed / SIGNATURE).write_bytes(__import__("base64").b64encode(impostor.sign((signed / MANIFEST).read_bytes())) + b"\n")
    (signed / PUBLIC_KEY).write_bytes(impostor.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert verify_bundle(signed) == [] and verify_bundle(signed, load_public_key(public)) != []


def test_oscal_assessment_results_validate(bundle, evidence):
    document = json.loads((bundle / "assessment-results.json").read_text())
    results = AssessmentResults.model_validate(document["assessment-results"])
    result = results.results[0]
    assert len(result.observations) == len(evidence["claims"])
    holds = {c["id"] for c in evidence["claims"] if c["status"] == "holds"}
    assert {f.target.target_id for f in result.findings} == holds
    assert all(f.target.status.state.value == "satisfied" for f in result.findings)
    assert "CC6.1" in {c.control_id for c in result.reviewed_controls.control_selections[0].include_controls}


def test_reports_are_self_contained(bundle):
    page = (bundle / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "PF-DB-01" in page and "The access you granted" in page
    # No external asset: no script, stylesheet, image, frame, import or link out. (Values shown
    # in the report may contain URLs as text, e.g. the sandbox's proxy setting.)
    for external in ("<script", "<link", "src=", "url(", "@import", 'href="http', "href='http"):
        assert external not in page
    assert "| PF-DB-01 | holds |" in (bundle / "report.md").read_text()


def _export(tmp_path, document=None) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document if document is not None else state_export(_export.plan)))
    return path


@pytest.fixture(autouse=True)
def _plan_for_exports(plan_doc):
    _export.plan = plan_doc


def test_state_export_gives_the_plans_verdicts_and_no_secret(tmp_path, view):
    export = state_export(_export.plan)
    state_view = read_state(export)
    assert {r.claim.id: r.status for r in evaluate(state_view)} == {r.claim.id: r.status for r in evaluate(view)}
    assert run_cli("evidence", "--state", str(_export(tmp_path, export)), "--out", str(tmp_path / "out")) == 0
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir())
    for secret in (PLAINTEXT_MARKER, CIPHERTEXT_MARKER, SALT_MARKER):
        assert secret.encode() not in written
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text())
    assert evidence["source"] == {**evidence["source"], "kind": "state", "stack": "byoc-example", "timestamp": "2025-01-02T02:04:05.123456Z"}
    assert evidence["stack"]["region"] == "europe-west4"
    jsonschema.Draft202012Validator(SCHEMA).validate(evidence)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file does not exist"),
        ("{not json", "not valid JSON"),
        (json.dumps({"version": 2, "deployment": {"resources": []}}), "only deployment version 3"),
        (json.dumps({"version": 3}), "deployment: missing or not an object"),
        (json.dumps({"version": 3, "deployment": {"resources": [{"urn": 1}]}}), "deployment.resources[0]: needs string `urn` and `type`"),
        (json.dumps([1, 2]), "not a JSON object"),
    ],
)
def test_bad_exports_exit_2_naming_the_problem(tmp_path, capsys, content, message):
    path = tmp_path / "export.json"
    if content is not None:
        path.write_text(content)
    assert run_cli("evidence", "--state", str(path), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_diff_reports_a_regression_and_a_new_pass(tmp_path, capsys):
    base = state_export(_export.plan)
    broken = copy.deepcopy(base)
    instance = next(r for r in broken["deployment"]["resources"] if r["type"] == "gcp:sql/databaseInstance:DatabaseInstance")
    instance["inputs"]["settings"]["ipConfiguration"]["ipv4Enabled"] = True
    for name, document in (("good", base), ("bad", broken)):
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
        assert run_cli("evidence", "--state", str(tmp_path / f"{name}.json"), "--out", str(tmp_path / name)) == 0
    capsys.readouterr()
    assert run_cli("evidence", "diff", str(tmp_path / "good"), str(tmp_path / "bad")) == 1
    out = capsys.readouterr().out
    assert "REGRESSIONS (held before, not now): 1\n  PF-DB-01: holds -> violated" in out
    assert "/inputs/settings/ipConfiguration/ipv4Enabled: false -> true" in out
    assert run_cli("evidence", "diff", str(tmp_path / "bad"), str(tmp_path / "good")) == 0
    assert "new passes: 1\n  PF-DB-01: violated -> holds" in capsys.readouterr().out
    assert run_cli("evidence", "diff", str(tmp_path / "good"), str(tmp_path / "missing")) == 2


def test_check_and_evidence_commands_on_a_stack(cli_plan, tmp_path, capsys):
    assert run_cli("check", "--stack", "byoc-example") == 0
    out = capsys.readouterr().out
    assert "PF-DB-01    holds" in out and "0 violated" in out
    assert run_cli("evidence", "--stack", "byoc-example", "--out", str(tmp_path / "b")) == 0
    assert verify_bundle(tmp_path / "b") == []
    assert run_cli("evidence", "--out", str(tmp_path / "c")) == 2


def test_check_exits_1_on_a_violation(monkeypatch, byoc_plan, capsys):
    import infra.engine

    broken = copy.deepcopy(byoc_plan)
    bucket = next(r for r in broken.resources if r.type == "gcp:logging/projectBucketConfig:ProjectBucketConfig")
    bucket.inputs["retentionDays"] = 30
    monkeypatch.setattr(infra.engine, "plan_stack", lambda stack, layout=None: broken)
    assert run_cli("check", "--stack", "byoc-example") == 1
    assert "PF-AUD-01   violated" in capsys.readouterr().out
