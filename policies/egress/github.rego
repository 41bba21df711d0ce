# GitHub: REST (api host), git smart-HTTP (git host). GraphQL is in
# github_graphql.rego.
#
# Reads: GET/HEAD of repositories in the session grant (owner/repo compared
# case-insensitively), except webhook/deploy-key/secret/variable listings.
# Writes (sandbox only, granted repository, valid session grant):
#   * refs under refs/heads/<case_branch_prefix> (create, update, delete)
#   * git objects (blobs, trees, commits) - trees never touching workflows
#   * contents API PUT/DELETE with "branch" under the prefix
#   * creating the session's pull request: head under the prefix, draft=true,
#     only while the session has no pull request yet
#   * updating the session's pull request: title, body, state only
#   * issue comments and review comments on the session's pull request
#   * reviews on the session's pull request with event COMMENT only
# Everything else is denied; merge, approve, mark-ready, repository
# administration and workflow files are denied for EVERY source, not just
# the sandbox.
package perfloop.egress

import rego.v1

# Case branches always live under this root; a grant with any other prefix
# (or an empty one) is invalid.
case_branch_root := "perfloop/"

zero_oid_re := `^0+$`

# ---------------------------------------------------------------- hosts

github_hosts contains ["api.github.com", "github.com"]

github_hosts contains [ch.api_host, ch.git_host] if {
	some id
	ch := data.perfloop.workspaces[id].code_host
	ch.provider == "github"
}

gh_api_host if {
	some pair in github_hosts
	host == pair[0]
}

gh_git_host if {
	some pair in github_hosts
	host == pair[1]
}

# The session's own GitHub hosts (the only ones the sandbox may use).
session_github_api if {
	code_host.provider == "github"
	host == code_host.api_host
}

session_github_git if {
	code_host.provider == "github"
	host == code_host.git_host
}

# ---------------------------------------------------------------- grant

granted_repos := _session_repos & _workspace_repos

_session_repos := {lower(r) | some r in session.repositories; is_string(r)}

_workspace_repos := {lower(r) | some r in code_host.repositories; is_string(r)}

repo_granted(r) if {
	is_string(r)
	lower(r) in granted_repos
}

with_trailing_slash(s) := s if endswith(s, "/")

with_trailing_slash(s) := concat("", [s, "/"]) if not endswith(s, "/")

# The grant's prefix, always ending in "/": "perfloop/case-1" and
# "perfloop/case-1/" both mean branches "perfloop/case-1/<something>", so
# "perfloop/case-10/x" never matches "perfloop/case-1".
case_prefix := p if {
	is_string(session.case_branch_prefix)
	p := with_trailing_slash(session.case_branch_prefix)
	regex.match(`^perfloop/([A-Za-z0-9][A-Za-z0-9._-]*/)+$`, p)
	valid_branch_name(trim_suffix(p, "/"))
}

# A conservative subset of git check-ref-format.
valid_branch_name(b) if {
	is_string(b)
	regex.match(`^[A-Za-z0-9._/-]+$`, b)
	not contains(b, "..")
	not contains(b, "//")
	not startswith(b, "/")
	not startswith(b, "-")
	not endswith(b, "/")
	not endswith(b, ".")
	not regex.match(`(^|/)\.`, b)
	not regex.match(`\.lock(/|$)`, b)
}

branch_in_case(b) if {
	valid_branch_name(b)
	startswith(b, case_prefix)
	count(b) > count(case_prefix)
}

ref_in_case(ref) if {
	is_string(ref)
	startswith(ref, "refs/heads/")
	branch_in_case(substring(ref, 11, -1))
}

session_pr := n if {
	n := session.pull_request
	is_number(n)
	floor(n) == n
	n > 0
}

session_has_no_pr if object.get(session, "pull_request", null) == null

# Compared as canonical decimal text ("042" is not 42): no lenient parsing.
pr_is_session(n) if {
	regex.match(`^[1-9][0-9]{0,9}$`, n)
	n == format_int(session_pr, 10)
}

deny contains ["30", "session.case_branch_prefix", concat("", ["session grant case_branch_prefix ", str(object.get(session, "case_branch_prefix", null)), " is invalid (must be ", case_branch_root, "<case>/...)"])] if {
	source == "sandbox"
	is_write
	not case_prefix
}

deny contains ["30", "session.pull_request", "session grant pull_request must be null or a positive integer"] if {
	source == "sandbox"
	not session_has_no_pr
	not session_pr
}

# ---------------------------------------------------------------- paths

# Decoded, normalised workflow check. ".github" itself counts, because a tree
# entry ".github" can carry a whole pre-built workflows directory.
repo_file_parts(p) := r if {
	parts := split(lower(p), "/")
	r := [s | some s in parts; s != ""; s != "."]
}

is_workflow_path(p) if {
	is_string(p)
	np := concat("/", repo_file_parts(p))
	np in {".github", ".github/workflows"}
}

is_workflow_path(p) if {
	is_string(p)
	startswith(concat("/", repo_file_parts(p)), ".github/workflows/")
}

bad_repo_file_path(p) if type_name(p) != "string"

bad_repo_file_path(p) if ".." in repo_file_parts(p)

bad_repo_file_path(p) if contains(p, "\\")

bad_changed_path(p) if is_workflow_path(p)

bad_changed_path(p) if bad_repo_file_path(p)

# ---------------------------------------------------------------- REST parsing

gh_repo_path if {
	gh_api_host
	count(segments) >= 3
	segments[0] == "repos"
}

gh_repo := lower(concat("/", [segments[1], segments[2]])) if gh_repo_path

gh_rest := array.slice(segments, 3, count(segments)) if gh_repo_path

gh_ref_branch := concat("/", array.slice(gh_rest, 3, count(gh_rest))) if {
	count(gh_rest) > 3
	array.slice(gh_rest, 0, 3) == ["git", "refs", "heads"]
}

gh_contents_path := concat("/", array.slice(gh_rest, 1, count(gh_rest))) if {
	count(gh_rest) >= 2
	gh_rest[0] == "contents"
}

gh_pr_number := gh_rest[1] if {
	count(gh_rest) >= 2
	gh_rest[0] in {"pulls", "issues"}
	regex.match(`^[0-9]+$`, gh_rest[1])
}

sandbox_gh_write if {
	source == "sandbox"
	session_github_api
	gh_repo_path
	is_write
	repo_granted(gh_repo)
	case_prefix
}

has_key(obj, k) if k in object.keys(obj)

# ---------------------------------------------------------------- REST allows

allow_match contains ["github.read", concat("", ["read of granted repository ", gh_repo])] if {
	source == "sandbox"
	session_github_api
	is_read
	gh_repo_path
	repo_granted(gh_repo)
	not gh_sensitive_read
}

allow_match contains ["github.read", "rate limit status"] if {
	source == "sandbox"
	session_github_api
	is_read
	segments == ["rate_limit"]
}

gh_sensitive_read if {
	count(gh_rest) > 0
	gh_rest[0] in {"hooks", "keys"}
}

gh_sensitive_read if {
	some s in gh_rest
	s in {"secrets", "variables"}
}

allow_match contains ["github.ref_write", concat("", ["create ref ", str(oget(body, "ref")), " under the case-branch prefix"])] if {
	sandbox_gh_write
	method == "POST"
	gh_rest == ["git", "refs"]
	ref_in_case(body.ref)
}

allow_match contains ["github.ref_write", concat("", [method, " of case branch ", gh_ref_branch])] if {
	sandbox_gh_write
	method in {"PATCH", "DELETE"}
	branch_in_case(gh_ref_branch)
}

allow_match contains ["github.git_objects", concat("", ["create git ", gh_rest[1], " (objects only, no ref moves)"])] if {
	sandbox_gh_write
	method == "POST"
	count(gh_rest) == 2
	gh_rest[0] == "git"
	gh_rest[1] in {"blobs", "trees", "commits"}
}

allow_match contains ["github.contents", concat("", ["contents ", method, " on case branch ", str(oget(body, "branch"))])] if {
	sandbox_gh_write
	method in {"PUT", "DELETE"}
	gh_contents_path
	branch_in_case(body.branch)
}

allow_match contains ["github.pr_create", concat("", ["create draft pull request from ", str(oget(body, "head"))])] if {
	sandbox_gh_write
	method == "POST"
	gh_rest == ["pulls"]
	session_has_no_pr
	pr_head_in_case
	body.draft == true
	not has_key(body, "issue")
}

pr_head_in_case if {
	is_string(body.head)
	not contains(body.head, ":")
	branch_in_case(body.head)
	pr_head_repo_ok
}

pr_head_in_case if {
	is_string(body.head)
	parts := split(body.head, ":")
	count(parts) == 2
	lower(parts[0]) == lower(segments[1])
	branch_in_case(parts[1])
	pr_head_repo_ok
}

pr_head_repo_ok if not has_key(body, "head_repo")

pr_head_repo_ok if lower(str(body.head_repo)) in {lower(segments[2]), gh_repo}

pr_update_fields := {"title", "body", "state", "maintainer_can_modify"}

allow_match contains ["github.pr_update", concat("", ["update title/body/state of session pull request #", str(session_pr)])] if {
	sandbox_gh_write
	method == "PATCH"
	count(gh_rest) == 2
	gh_rest[0] == "pulls"
	pr_is_session(gh_rest[1])
	count(object.keys(body) - pr_update_fields) == 0
	object.get(body, "state", "open") in {"open", "closed"}
}

allow_match contains ["github.pr_comment", concat("", ["comment on session pull request #", str(session_pr)])] if {
	sandbox_gh_write
	method == "POST"
	count(gh_rest) == 3
	gh_rest[0] in {"issues", "pulls"}
	pr_is_session(gh_rest[1])
	gh_rest[2] == "comments"
}

allow_match contains ["github.pr_comment", concat("", ["reply to a review comment on session pull request #", str(session_pr)])] if {
	sandbox_gh_write
	method == "POST"
	count(gh_rest) == 5
	gh_rest[0] == "pulls"
	pr_is_session(gh_rest[1])
	gh_rest[2] == "comments"
	regex.match(`^[0-9]+$`, gh_rest[3])
	gh_rest[4] == "replies"
}

allow_match contains ["github.pr_review", concat("", ["COMMENT review on session pull request #", str(session_pr)])] if {
	sandbox_gh_write
	method == "POST"
	gh_review_create
	pr_is_session(gh_rest[1])
	review_event == "COMMENT"
}

allow_match contains ["github.pr_review", concat("", ["submit COMMENT review on session pull request #", str(session_pr)])] if {
	sandbox_gh_write
	method == "POST"
	gh_review_submit
	pr_is_session(gh_rest[1])
	review_event == "COMMENT"
}

gh_review_create if {
	count(gh_rest) == 3
	gh_rest[0] == "pulls"
	gh_rest[2] == "reviews"
}

gh_review_submit if {
	count(gh_rest) == 5
	gh_rest[0] == "pulls"
	gh_rest[2] == "reviews"
	gh_rest[4] == "events"
}

review_event := upper(body.event) if {
	is_string(body.event)
	regex.match(`^[A-Za-z_]+$`, body.event)
}

# ---------------------------------------------------------------- REST denies (every source)

gh_write_on_repo if {
	gh_repo_path
	is_write
}

deny contains ["40", "github.merge", concat("", ["merging is denied at the proxy (", method, " ", path, ")"])] if {
	gh_write_on_repo
	gh_rest == ["merges"]
}

deny contains ["40", "github.merge", concat("", ["merging is denied at the proxy (", method, " ", path, ")"])] if {
	gh_write_on_repo
	gh_rest == ["merge-upstream"]
}

deny contains ["40", "github.merge", concat("", ["merging is denied at the proxy (", method, " ", path, ")"])] if {
	gh_write_on_repo
	count(gh_rest) == 3
	gh_rest[0] == "pulls"
	gh_rest[2] in {"merge", "update-branch"}
}

deny contains ["40", "github.approve", "approving a pull request is denied at the proxy (review event APPROVE)"] if {
	gh_write_on_repo
	gh_review_create
	review_event == "APPROVE"
}

deny contains ["40", "github.approve", "approving a pull request is denied at the proxy (submitting a pending review with APPROVE)"] if {
	gh_write_on_repo
	gh_review_submit
	review_event == "APPROVE"
}

deny contains ["40", "github.mark_ready", "marking a pull request ready for review is denied at the proxy (draft: false)"] if {
	gh_write_on_repo
	count(gh_rest) == 2
	gh_rest[0] == "pulls"
	has_key(body, "draft")
	body.draft != true
}

deny contains ["40", "github.pr_base_change", "changing a pull request's base branch is denied"] if {
	gh_write_on_repo
	count(gh_rest) == 2
	gh_rest[0] == "pulls"
	has_key(body, "base")
}

deny contains ["40", "github.repo_settings", "changing repository settings is denied (PATCH /repos/{owner}/{repo})"] if {
	gh_write_on_repo
	gh_rest == []
	method != "DELETE"
}

deny contains ["40", "github.repo_delete", "deleting a repository is denied"] if {
	gh_write_on_repo
	gh_rest == []
	method == "DELETE"
}

gh_admin_category := {
	"hooks": "github.webhooks",
	"keys": "github.deploy_keys",
	"collaborators": "github.collaborators",
	"invitations": "github.collaborators",
	"teams": "github.collaborators",
	"rulesets": "github.branch_protection",
	"releases": "github.releases",
	"actions": "github.actions",
	"dispatches": "github.actions",
	"forks": "github.fork",
	"transfer": "github.repo_settings",
	"topics": "github.repo_settings",
	"pages": "github.repo_settings",
	"environments": "github.repo_settings",
	"autolinks": "github.repo_settings",
	"vulnerability-alerts": "github.repo_settings",
	"automated-security-fixes": "github.repo_settings",
	"private-vulnerability-reporting": "github.repo_settings",
	"interaction-limits": "github.repo_settings",
	"properties": "github.repo_settings",
	"tags": "github.branch_protection",
	"deployments": "github.actions",
	"check-runs": "github.actions",
	"check-suites": "github.actions",
	"statuses": "github.actions",
	"codespaces": "github.secrets",
	"dependabot": "github.secrets",
	"secret-scanning": "github.repo_settings",
	"code-scanning": "github.repo_settings",
	"lfs": "github.repo_settings",
	"import": "github.repo_settings",
}

deny contains ["40", rule, concat("", ["repository administration is denied: ", method, " ", path])] if {
	gh_write_on_repo
	count(gh_rest) > 0
	rule := gh_admin_category[gh_rest[0]]
	not gh_secret_path
}

gh_secret_path if {
	some s in gh_rest
	s in {"secrets", "variables"}
}

deny contains ["40", "github.secrets", concat("", ["secrets and variables are denied: ", method, " ", path])] if {
	gh_repo_path
	gh_secret_path
}

deny contains ["40", "github.sensitive_read", concat("", ["reading webhooks or deploy keys is denied: ", path])] if {
	gh_repo_path
	is_read
	count(gh_rest) > 0
	gh_rest[0] in {"hooks", "keys"}
}

deny contains ["40", "github.branch_protection", concat("", ["branch protection is denied: ", method, " ", path])] if {
	gh_write_on_repo
	count(gh_rest) >= 3
	gh_rest[0] == "branches"
	"protection" in gh_rest
}

deny contains ["40", "github.workflow_file", concat("", ["writing workflow files is denied (", gh_contents_path, ")"])] if {
	gh_write_on_repo
	gh_contents_path
	is_workflow_path(gh_contents_path)
}

deny contains ["40", "github.workflow_file", concat("", ["tree entry ", str(oget(entry, "path")), " touches .github/workflows"])] if {
	gh_write_on_repo
	gh_rest == ["git", "trees"]
	some entry in object.get(body, "tree", [])
	is_workflow_path(entry.path)
}

deny contains ["40", "github.path_invalid", concat("", ["tree entry path ", str(oget(entry, "path")), " is not a plain relative path"])] if {
	gh_write_on_repo
	gh_rest == ["git", "trees"]
	some entry in object.get(body, "tree", [])
	bad_repo_file_path(entry.path)
}

deny contains ["40", "github.path_invalid", "git trees body must carry a \"tree\" array"] if {
	gh_write_on_repo
	gh_rest == ["git", "trees"]
	not is_array(body.tree)
}

deny contains ["40", "github.repo_by_id", "repository access by numeric id (/repositories/{id}) is denied; the grant names repositories"] if {
	gh_api_host
	count(segments) >= 1
	segments[0] == "repositories"
}

# ---------------------------------------------------------------- REST denies (sandbox session binding)

deny contains ["40", "github.repo_not_granted", concat("", ["repository ", gh_repo, " is not in the session grant"])] if {
	source == "sandbox"
	gh_repo_path
	not repo_granted(gh_repo)
}

deny contains ["40", "github.branch_outside_case_prefix", concat("", ["ref ", str(oget(body, "ref")), " is outside refs/heads/", _d_case_prefix])] if {
	source == "sandbox"
	gh_write_on_repo
	gh_rest == ["git", "refs"]
	not ref_in_case(body.ref)
}

deny contains ["40", "github.branch_outside_case_prefix", concat("", ["ref refs/", concat("/", array.slice(gh_rest, 2, count(gh_rest))), " is outside refs/heads/", _d_case_prefix])] if {
	source == "sandbox"
	gh_write_on_repo
	count(gh_rest) >= 3
	array.slice(gh_rest, 0, 2) == ["git", "refs"]
	not branch_in_case(gh_ref_branch)
}

deny contains ["40", "github.default_branch_write", "contents write without \"branch\" goes to the default branch; denied"] if {
	source == "sandbox"
	gh_write_on_repo
	gh_contents_path
	not has_key(body, "branch")
}

deny contains ["40", "github.branch_outside_case_prefix", concat("", ["contents write to branch ", str(oget(body, "branch")), " is outside ", _d_case_prefix])] if {
	source == "sandbox"
	gh_write_on_repo
	gh_contents_path
	has_key(body, "branch")
	not branch_in_case(body.branch)
}

deny contains ["40", "github.branch_outside_case_prefix", concat("", ["pull request head ", str(oget(body, "head")), " is not a branch under ", _d_case_prefix, " of this repository"])] if {
	source == "sandbox"
	gh_write_on_repo
	method == "POST"
	gh_rest == ["pulls"]
	not pr_head_in_case
}

deny contains ["40", "github.pr_not_draft", "the session's pull request must be created as a draft (draft: true)"] if {
	source == "sandbox"
	gh_write_on_repo
	method == "POST"
	gh_rest == ["pulls"]
	not body.draft == true
}

deny contains ["40", "github.pr_exists", concat("", ["the session already has pull request #", str(str(session.pull_request)), "; no second one"])] if {
	source == "sandbox"
	gh_write_on_repo
	method == "POST"
	gh_rest == ["pulls"]
	not session_has_no_pr
}

deny contains ["40", "github.pr_not_session", concat("", ["pull request/issue #", gh_pr_number, " is not the session's pull request"])] if {
	source == "sandbox"
	gh_write_on_repo
	gh_pr_number
	not pr_is_session(gh_pr_number)
}

deny contains ["40", "github.pr_update_fields", concat("", ["only title, body and state of the session pull request may change; got ", concat(",", object.keys(body) - pr_update_fields)])] if {
	source == "sandbox"
	gh_write_on_repo
	method == "PATCH"
	count(gh_rest) == 2
	gh_rest[0] == "pulls"
	count(object.keys(body) - pr_update_fields) > 0
}

deny contains ["40", "github.review_event", concat("", ["reviews are allowed only with event COMMENT, got ", str(object.get(body, "event", null))])] if {
	source == "sandbox"
	gh_write_on_repo
	method == "POST"
	gh_rest_is_review
	not review_event in {"COMMENT", "APPROVE"}
}

gh_rest_is_review if gh_review_create

gh_rest_is_review if gh_review_submit

deny contains ["45", "github.write_not_allowed", concat("", [method, " ", path, " is not a write the session grant allows (case branches, git objects, the session's draft pull request and comments on it)"])] if {
	source == "sandbox"
	session_github_api
	gh_write_on_repo
	repo_granted(gh_repo)
	count(allow_match) == 0
}

deny contains ["45", "github.outside_repositories", concat("", [method, " ", path, " is outside /repos/{owner}/{repo} of the grant"])] if {
	source == "sandbox"
	session_github_api
	not gh_repo_path
	not segments == ["graphql"]
	not segments == ["rate_limit"]
}

# ---------------------------------------------------------------- git smart HTTP

git_repo := lower(concat("/", [segments[0], trim_suffix(segments[1], ".git")])) if {
	gh_git_host
	count(segments) >= 3
}

git_rest := array.slice(segments, 2, count(segments)) if git_repo

git_services := {"git-upload-pack", "git-receive-pack"}

allow_match contains ["git.info_refs", concat("", ["ref advertisement (", qparam("service"), ") of granted repository ", git_repo])] if {
	source == "sandbox"
	session_github_git
	method == "GET"
	git_rest == ["info", "refs"]
	qparam("service") in git_services
	repo_granted(git_repo)
}

allow_match contains ["git.upload_pack", concat("", ["fetch from granted repository ", git_repo])] if {
	source == "sandbox"
	session_github_git
	method == "POST"
	git_rest == ["git-upload-pack"]
	repo_granted(git_repo)
}

allow_match contains ["git.receive_pack", concat("", ["push to case branches of ", git_repo])] if {
	source == "sandbox"
	session_github_git
	method == "POST"
	git_rest == ["git-receive-pack"]
	repo_granted(git_repo)
	case_prefix
	count(git_ref_updates) > 0
	count([u | some u in git_ref_updates; not ref_in_case(u.ref)]) == 0
	git_paths_ok
}

git_ref_updates := input.git.ref_updates if is_array(input.git.ref_updates)

git_is_delete(u) if regex.match(zero_oid_re, str(oget(u, "new")))

default _d_case_prefix := "(invalid case_branch_prefix)"

_d_case_prefix := case_prefix

git_has_non_delete if {
	some u in git_ref_updates
	not git_is_delete(u)
}

git_paths_ok if not git_has_non_delete

git_paths_ok if {
	git_has_non_delete
	is_array(input.git.changed_paths)
	count([p | some p in input.git.changed_paths; bad_changed_path(p)]) == 0
}

deny contains ["40", "github.repo_not_granted", concat("", ["repository ", git_repo, " is not in the session grant"])] if {
	source == "sandbox"
	git_repo
	not repo_granted(git_repo)
}

deny contains ["40", "git.service", concat("", ["info/refs needs exactly one service=git-upload-pack|git-receive-pack, got ", str(query_values("service"))])] if {
	gh_git_host
	git_rest == ["info", "refs"]
	not qparam("service") in git_services
}

deny contains ["40", "git.ref_updates_missing", "git-receive-pack needs the proxy-parsed input.git.ref_updates (non-empty)"] if {
	gh_git_host
	git_rest == ["git-receive-pack"]
	not git_ref_updates_present
}

git_ref_updates_present if count(git_ref_updates) > 0

deny contains ["40", "github.branch_outside_case_prefix", concat("", ["push to ", str(oget(u, "ref")), " is outside refs/heads/", _d_case_prefix])] if {
	gh_git_host
	git_rest == ["git-receive-pack"]
	some u in git_ref_updates
	not ref_in_case(u.ref)
}

deny contains ["40", "git.changed_paths_missing", "a push that creates or moves a ref needs the proxy-computed input.git.changed_paths (workflow-file check)"] if {
	gh_git_host
	git_rest == ["git-receive-pack"]
	git_has_non_delete
	not is_array(input.git.changed_paths)
}

deny contains ["40", "github.workflow_file", concat("", ["push changes ", str(p), " under .github/workflows"])] if {
	gh_git_host
	git_rest == ["git-receive-pack"]
	some p in input.git.changed_paths
	is_workflow_path(p)
}

deny contains ["40", "github.path_invalid", concat("", ["pushed path ", str(p), " is not a plain relative path"])] if {
	gh_git_host
	git_rest == ["git-receive-pack"]
	some p in input.git.changed_paths
	bad_repo_file_path(p)
}

deny contains ["45", "git.path_not_allowed", concat("", [method, " ", path, " on the git host is not a smart-HTTP endpoint of a granted repository"])] if {
	source == "sandbox"
	session_github_git
	not git_rest in {["info", "refs"], ["git-upload-pack"], ["git-receive-pack"]}
}
