"""Mutation check for the egress policy tests (run by hand, not by pytest).

Each mutation weakens one allow/deny property in a temporary copy of
policies/egress; the table and attack-corpus tests are then run against the
copy (PERFLOOP_EGRESS_POLICY_DIR) and MUST fail. The real policy files are
never modified.

    /tmp/venv/bin/python tests/egress/mutation_check.py [name-substring]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
POLICY_DIR = REPO_ROOT / "policies" / "egress"

# (name, [(file, old, new), ...]); every `old` must occur in the file.
MUTATIONS = [
    ("drop REST merge deny (pulls/N/merge)", [
        ("github.rego", 'gh_rest[2] in {"merge", "update-branch"}', 'gh_rest[2] in {"update-branch"}'),
    ]),
    ("drop GraphQL mergePullRequest deny", [
        ("github_graphql.rego", 'merge_mutations := {"mergePullRequest", ', "merge_mutations := {"),
    ]),
    ("allow mergePullRequest as a mutation", [
        ("github_graphql.rego", 'merge_mutations := {"mergePullRequest", ', "merge_mutations := {"),
        ("github_graphql.rego", 'gql_allowed_mutations := {"createRef",', 'gql_allowed_mutations := {"mergePullRequest", "createRef",'),
        ("github_graphql.rego", "mutation_ok(f) if {\n\tf.name == \"createRef\"", "mutation_ok(f) if f.name == \"mergePullRequest\"\n\nmutation_ok(f) if {\n\tf.name == \"createRef\""),
    ]),
    ("drop approve deny (REST)", [
        ("github.rego", '\tgh_review_create\n\treview_event == "APPROVE"', '\tgh_review_create\n\treview_event == "NEVER"'),
    ]),
    ("accept APPROVE reviews (REST + GraphQL)", [
        ("github.rego", 'review_event == "APPROVE"', 'review_event == "NEVER"'),
        ("github.rego", '\tpr_is_session(gh_rest[1])\n\treview_event == "COMMENT"\n}\n\nallow_match contains ["github.pr_review", concat("", ["submit',
         '\tpr_is_session(gh_rest[1])\n\treview_event in {"COMMENT", "APPROVE"}\n}\n\nallow_match contains ["github.pr_review", concat("", ["submit'),
        ("github_graphql.rego", '\tupper(ev) == "APPROVE"', '\tupper(ev) == "NEVER"'),
        ("github_graphql.rego", '\ti.event == "COMMENT"', '\ti.event in {"COMMENT", "APPROVE", "approve"}'),
    ]),
    ("drop mark-ready deny (REST draft:false)", [
        ("github.rego", "\thas_key(body, \"draft\")\n\tbody.draft != true", "\thas_key(body, \"draft\")\n\tbody.draft == \"never\""),
    ]),
    ("allow draft in PR update", [
        ("github.rego", "\thas_key(body, \"draft\")\n\tbody.draft != true", "\thas_key(body, \"draft\")\n\tbody.draft == \"never\""),
        ("github.rego", 'pr_update_fields := {"title", "body", "state", "maintainer_can_modify"}', 'pr_update_fields := {"title", "body", "state", "maintainer_can_modify", "draft"}'),
    ]),
    ("drop GraphQL markPullRequestReadyForReview deny", [
        ("github_graphql.rego", '\tf.name == "markPullRequestReadyForReview"', '\tf.name == "neverMarkReady"'),
    ]),
    ("case prefix compared without trailing slash (case-1 vs case-10)", [
        ("github.rego", "\tstartswith(b, case_prefix)\n\tcount(b) > count(case_prefix)", "\tstartswith(b, trim_suffix(case_prefix, \"/\"))"),
    ]),
    ("no ref-name validation (refs/heads/perfloop/case-1/../main)", [
        ("github.rego", 'branch_in_case(b) if {\n\tvalid_branch_name(b)\n', "branch_in_case(b) if {\n"),
    ]),
    ("dot segments not rejected", [
        ("normalize.rego", 'seg in {".", ".."}', 'seg in {"<never>"}'),
    ]),
    ("encoded slash not rejected", [
        ("normalize.rego", "encoded_separator_re := `%(2[Ff]|5[Cc])`", "encoded_separator_re := `%(5[Cc])`"),
    ]),
    ("method-override headers ignored", [
        ("normalize.rego", 'method_override_headers := {"x-http-method-override", "x-http-method", "x-method-override"}', 'method_override_headers := {"x-never"}'),
    ]),
    ("host compared case-sensitively", [
        ("normalize.rego", "_host_field := lower(input.host) if is_string(input.host)", "_host_field := input.host if is_string(input.host)"),
    ]),
    ("IP literals accepted", [
        ("normalize.rego", "\tregex.match(`^(0x[0-9a-f]*|[0-9]+)$`, last)", "\tregex.match(`^never$`, last)"),
    ]),
    ("plain http accepted (deny and positive precondition both dropped)", [
        ("normalize.rego", '\tnot scheme == "https"\n', "\tfalse\n"),
        ("main.rego", '\tscheme == "https"\n\tmethod in allowed_methods', "\tmethod in allowed_methods"),
    ]),
    ("non-default ports accepted", [
        ("normalize.rego", "port_declared if port == 443", "port_declared if port"),
    ]),
    ("allow wins over deny", [
        ("main.rego", "decision := _deny_decision if {\n\tcount(deny) > 0\n} else := _allow_decision if {\n\tcount(deny) == 0\n\trequest_well_formed\n\tcount(allow_match) > 0\n}",
         "decision := _allow_decision if {\n\trequest_well_formed\n\tcount(allow_match) > 0\n} else := _deny_decision if {\n\tcount(deny) > 0\n}"),
    ]),
    ("repository grant ignored", [
        ("github.rego", "\tis_string(r)\n\tlower(r) in granted_repos", "\tis_string(r)"),
    ]),
    ("session PR number not checked", [
        ("github.rego", "\tn == format_int(session_pr, 10)", "\tsession_pr"),
    ]),
    ("GraphQL: only the first root field judged", [
        ("github_graphql.rego", "\tcount([f | some f in gql_fields; not mutation_ok(f)]) == 0", "\tmutation_ok(gql_fields[0])"),
        ("github_graphql.rego", '"github.graphql_mutation_not_allowed", concat', '"github.graphql_mutation_not_allowed", concat'),
        ("github_graphql.rego", "\tsome f in gql_fields\n\tnot f.name in gql_allowed_mutations", "\tf := gql_fields[0]\n\tnot f.name in gql_allowed_mutations"),
        ("github_graphql.rego", "\tsome f in gql_fields\n\tf.name in gql_allowed_mutations\n\tnot mutation_ok(f)", "\tf := gql_fields[0]\n\tf.name in gql_allowed_mutations\n\tnot mutation_ok(f)"),
    ]),
    ("workflow-file check disabled", [
        ("github.rego", 'np in {".github", ".github/workflows"}', 'np in {"<never>"}'),
        ("github.rego", 'startswith(concat("/", repo_file_parts(p)), ".github/workflows/")', 'startswith(concat("/", repo_file_parts(p)), "<never>/")'),
    ]),
    ("contents write without branch allowed (default branch)", [
        ("github.rego", "\tgh_contents_path\n\tbranch_in_case(body.branch)\n", "\tgh_contents_path\n"),
        ("github.rego", "\tgh_contents_path\n\tnot has_key(body, \"branch\")", "\tgh_contents_path\n\tfalse"),
    ]),
    ("git push refs not checked", [
        ("github.rego", "\tcount([u | some u in git_ref_updates; not ref_in_case(u.ref)]) == 0\n", ""),
        ("github.rego", "\tsome u in git_ref_updates\n\tnot ref_in_case(u.ref)", "\tsome u in git_ref_updates\n\tfalse"),
    ]),
    ("sandbox may leave its code host", [
        ("destinations.rego", "\tsource == \"sandbox\"\n\thost\n\tnot is_code_host(host)", "\tsource == \"sandbox\"\n\thost\n\tfalse"),
    ]),
    ("never-destinations not checked", [
        ("destinations.rego", "is_never_host(h) if h in never_hosts", "is_never_host(h) if h == \"<never>\""),
    ]),
    ("WorkOS reachable from any source", [
        ("destinations.rego", "\tis_workos_host(host)\n\tsource != \"control-plane-api\"", "\tis_workos_host(host)\n\tfalse"),
    ]),
    ("Vertex AI in any region", [
        ("destinations.rego", "is_model_host(h) if {\n\tis_vertex_like(h)\n\th != vertex_host\n}", ""),
    ]),
    ("strict logs mode ignored", [
        ("telemetry.rego", "\te.provider == provider\n\te.mode == \"aggregate\"", "\te.provider == provider"),
        ("telemetry.rego", "logs_strict if {\n\tsource == \"connector-logs\"", "logs_strict if {\n\tfalse\n\tsource == \"connector-logs\""),
    ]),
    ("raw log endpoints not denied by name", [
        ("telemetry.rego", "\t[`^/api/v2/logs/events(/search)?$`, \"telemetry.raw_logs\"],\n", ""),
    ]),
    ("log aggregates may group by any facet", [
        ("telemetry.rego", 'log_group_keys := {"service", "status", "env", "version", "source", "host"}', 'log_group_keys := {"service", "status", "env", "version", "source", "host", "message"}'),
    ]),
    ("unapproved trace attributes allowed", [
        ("telemetry.rego", "span_key_allowed(k) if k == \"@duration\"", "span_key_allowed(k) if is_string(k)"),
    ]),
    ("sandbox may bring its own credential", [
        ("normalize.rego", '\tsome name in header_names\n\tname in credential_headers', '\tsome name in header_names\n\tname == "<never>"'),
    ]),
]

TESTS = ["tests/egress/test_policy_cases.py", "tests/egress/test_attack_corpus.py"]


def mutate(directory: Path, edits) -> None:
    for file, old, new in edits:
        path = directory / file
        text = path.read_text()
        if old not in text:
            raise SystemExit(f"mutation anchor not found in {file}: {old[:60]!r}")
        path.write_text(text.replace(old, new))


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    for name, edits in MUTATIONS:  # fail fast on a stale anchor
        for file, old, _ in edits:
            if old not in (POLICY_DIR / file).read_text():
                raise SystemExit(f"{name}: anchor not found in {file}: {old[:60]!r}")
    results = []
    for name, edits in MUTATIONS:
        if only and only not in name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "egress"
            shutil.copytree(POLICY_DIR, target)
            mutate(target, edits)
            env = dict(os.environ, PERFLOOP_EGRESS_POLICY_DIR=str(target))
            start = time.time()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            )
            tail = [l for l in proc.stdout.splitlines() if " passed" in l or " failed" in l or " error" in l]
            caught = proc.returncode != 0
            results.append((name, caught, tail[-1] if tail else proc.stdout[-200:], time.time() - start))
            print(f"{'RED (caught)' if caught else 'GREEN (MISSED)':15} {name}: {results[-1][2]}", flush=True)
    missed = [r for r in results if not r[1]]
    print(f"\n{len(results) - len(missed)}/{len(results)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
