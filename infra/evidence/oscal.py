"""The evidence as an OSCAL assessment-results document (NIST OSCAL, through compliance-trestle's
models, which validate it as it is built).

Mapping: the claims catalogue is the assessment plan (`import-ap`); each claim is one
observation (method TEST, its resources as subjects, its place in evidence.json as relevant
evidence); each claim that holds or is violated is also a finding on the objective of the same
ID (satisfied/pass or not-satisfied/fail). Claims that are not applicable or not yet assessed
stay observations only: OSCAL has no state for them, and neither is a pass or a fail. Every UUID
is a name-based UUID (v5) of what it identifies, so the same evidence gives the same document.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from trestle.oscal import OSCAL_VERSION
from trestle.oscal import common
from trestle.oscal.assessment_results import AssessmentResults, ImportAp, Result

# Namespace of every UUID in the document: uuid5(NAMESPACE_URL, the project's name).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://perfloop.ai/perfloop-platform/evidence")
_STATE = {"holds": ("satisfied", "pass"), "violated": ("not-satisfied", "fail")}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def assessment_results(evidence: dict[str, Any]) -> AssessmentResults:
    source, generator = evidence["source"], evidence["generator"]
    when = datetime.fromisoformat(source["timestamp"].replace("Z", "+00:00"))
    key = f"{source['kind']}:{source['stack']}:{source['digest']}"
    urns = sorted({urn for claim in evidence["claims"] for urn in claim["resources"]})
    observations, findings = [], []
    for i, claim in enumerate(evidence["claims"]):
        observation = common.Observation(
            uuid=_uuid(key, "observation", claim["id"]),
            title=f"{claim['id']}: {claim['title']}",
            description=f"{claim['status']}" + (f" ({claim['reason']})" if claim["reason"] else "") + f". Quote: {claim['quote']}",
            props=[common.Property(name="claim-status", value=claim["status"], ns="https://perfloop.ai/ns/oscal")],
            methods=["TEST"],
            types=["finding"],
            subjects=[common.SubjectReference(subject_uuid=_uuid("resource", urn), type="resource", title=urn) for urn in claim["resources"]] or None,
            relevant_evidence=[common.RelevantEvidence(href=f"evidence.json#/claims/{i}", description=f"checks, resource paths and values for {claim['id']}")],
            collected=when,
        )
        observations.append(observation)
        if claim["status"] in _STATE:
            state, reason = _STATE[claim["status"]]
            findings.append(
                common.Finding(
                    uuid=_uuid(key, "finding", claim["id"]),
                    title=f"{claim['id']}: {claim['title']}",
                    description=claim["reason"] or f"{claim['id']} {claim['status']}",
                    target=common.FindingTarget(
                        type="objective-id",
                        target_id=claim["id"],
                        status=common.ObjectiveStatus(state=state, reason=reason),
                    ),
                    related_observations=[common.RelatedObservation(observation_uuid=observation.uuid)],
                )
            )
    controls = sorted({t for claim in evidence["claims"] for t in claim["tsc"]})
    result = Result(
        uuid=_uuid(key, "result"),
        title=f"Security page claims on {source['stack']} ({source['kind']})",
        description="Each claim of the Perfloop security page, checked against the stack's resources.",
        start=when,
        end=when,
        reviewed_controls=common.ReviewedControls(
            description="SOC 2 Trust Services Criteria the claims support.",
            control_selections=[common.ControlSelections(include_controls=[common.SelectControlById(control_id=c) for c in controls])],
        ),
        observations=observations,
        findings=findings or None,
    )
    return AssessmentResults(
        uuid=_uuid(key, "assessment-results"),
        metadata=common.Metadata(
            title=f"Perfloop platform evidence: {source['stack']}",
            last_modified=when,
            version=f"{generator['version']}+{generator['commit']}",
            oscal_version=OSCAL_VERSION,
        ),
        import_ap=ImportAp(href="policies/claims.yaml", remarks="The claims catalogue is the assessment plan."),
        results=[result],
        back_matter=common.BackMatter(resources=[common.Resource(uuid=_uuid("resource", urn), title=urn) for urn in urns]) if urns else None,
    )


def document(evidence: dict[str, Any]) -> dict[str, Any]:
    """The wrapped OSCAL JSON (`{"assessment-results": ...}`), as plain data."""
    return assessment_results(evidence).oscal_dict()
