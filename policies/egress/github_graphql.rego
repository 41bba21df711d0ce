# GitHub GraphQL (POST <api host>/graphql).
#
# The proxy parses the GraphQL document and passes the operation it will
# execute as input.graphql (schema: input.schema.json):
#   operation_type : "query" | "mutation" | "subscription"
#   root_fields    : [{"name": <field name, NOT the alias>, "alias": ...,
#                      "arguments": {...}}]   one entry per root selection,
#                     duplicates and aliases included
#   variables      : the request's variables object
#   repositories   : every repository(owner:, name:) referenced anywhere in
#                    the document, as [{"owner", "name"}]
# Argument values are literal JSON; a variable reference is the object
# {"$variable": "<name>"} and is resolved here, at the top level of an
# argument and one level inside an input object. Anything still unresolved
# after that is denied.
#
# Every root field must be allowed on its own; one disallowed field denies
# the whole request (aliases and repetition cannot smuggle a mutation).
package perfloop.egress

import rego.v1

gql := input.graphql if is_object(input.graphql)

gql_endpoint if {
	gh_api_host
	segments == ["graphql"]
}

gql_vars := v if {
	v := gql.variables
	is_object(v)
}

gql_vars := {} if not is_object(gql.variables)

gql_fields := gql.root_fields if is_array(gql.root_fields)

is_var_ref(v) if {
	is_object(v)
	has_key(v, "$variable")
}

resolve(v) := gql_vars[v["$variable"]] if is_var_ref(v)

resolve(v) := v if not is_var_ref(v)

field_arg(f, name) := resolve(f.arguments[name])

# The "input" argument of a mutation with one level of variables resolved.
field_input(f) := r if {
	in_obj := field_arg(f, "input")
	is_object(in_obj)
	r := {k: resolve(x) | some k, x in in_obj}
}

unresolved(x) if {
	walk(x, [_, v])
	is_var_ref(v)
}

query_root_fields := {"repository", "rateLimit", "__typename", "__schema", "__type"}

merge_mutations := {"mergePullRequest", "enablePullRequestAutoMerge", "enqueuePullRequest", "mergeBranch", "updatePullRequestBranch"}

admin_mutations := {
	"updateRepository",
	"archiveRepository",
	"unarchiveRepository",
	"transferRepository",
	"createBranchProtectionRule",
	"updateBranchProtectionRule",
	"deleteBranchProtectionRule",
	"createRepositoryRuleset",
	"updateRepositoryRuleset",
	"deleteRepositoryRuleset",
	"createDeployment",
	"createEnvironment",
	"updateEnvironment",
	"deleteEnvironment",
	"addCollaborator",
	"updateRepositoryWebCommitSignoffSetting",
	"createRelease",
	"updateRelease",
	"deleteRelease",
}

# ---------------------------------------------------------------- request-level

deny contains ["40", "github.graphql_method", "GraphQL is accepted only as POST"] if {
	gql_endpoint
	method != "POST"
}

deny contains ["40", "github.graphql_unparsed", "POST /graphql needs the proxy-parsed operation in input.graphql with a non-empty root_fields list"] if {
	gql_endpoint
	not gql_well_formed
}

gql_well_formed if {
	count(gql_fields) > 0
	count([f | some f in gql_fields; not gql_field_shape_ok(f)]) == 0
}

gql_field_shape_ok(f) if {
	is_object(f)
	is_string(f.name)
}

deny contains ["40", "github.graphql_operation_type", concat("", ["GraphQL operation type ", str(oget(oget(input, "graphql"), "operation_type")), " is not allowed"])] if {
	gql_endpoint
	gql
	not gql.operation_type in {"query", "mutation"}
}

deny contains ["40", "github.graphql_unresolved_variable", concat("", ["GraphQL field ", str(oget(f, "name")), " has a variable reference that cannot be resolved"])] if {
	gql_endpoint
	some f in gql_fields
	unresolved(gql_field_resolved_args(f))
}

gql_field_resolved_args(f) := {k: r |
	some k, x in object.get(f, "arguments", {})
	r := gql_resolve_deep1(resolve(x))
}

gql_resolve_deep1(x) := r if {
	is_object(x)
	r := {k: resolve(y) | some k, y in x}
}

gql_resolve_deep1(x) := x if not is_object(x)

deny contains ["40", "github.graphql_variable_missing", concat("", ["GraphQL field ", str(oget(f, "name")), " references an undefined variable"])] if {
	gql_endpoint
	some f in gql_fields
	walk(object.get(f, "arguments", {}), [_, v])
	is_var_ref(v)
	not has_key(gql_vars, v["$variable"])
}

# ---------------------------------------------------------------- queries

deny contains ["40", "github.graphql_query_field", concat("", ["GraphQL query root field ", str(oget(f, "name")), " is not allowed (only repository, rateLimit and introspection)"])] if {
	gql_endpoint
	gql.operation_type == "query"
	some f in gql_fields
	not f.name in query_root_fields
}

deny contains ["40", "github.repo_not_granted", concat("", ["GraphQL references repository ", str(o), "/", str(n), " outside the session grant"])] if {
	source == "sandbox"
	gql_endpoint
	some f in gql_fields
	f.name == "repository"
	o := field_arg(f, "owner")
	n := field_arg(f, "name")
	not repo_granted(concat("", [str(o), "/", str(n)]))
}

deny contains ["40", "github.repo_not_granted", concat("", ["GraphQL references repository ", str(oget(r, "owner")), "/", str(oget(r, "name")), " outside the session grant"])] if {
	source == "sandbox"
	gql_endpoint
	some r in object.get(gql, "repositories", [])
	not repo_granted(concat("", [str(oget(r, "owner")), "/", str(oget(r, "name"))]))
}

gql_repo_ref_granted(r) if repo_granted(concat("", [str(oget(r, "owner")), "/", str(oget(r, "name"))]))

gql_query_field_ok(f) if f.name in {"rateLimit", "__typename", "__schema", "__type"}

gql_query_field_ok(f) if {
	f.name == "repository"
	repo_granted(concat("", [str(field_arg(f, "owner")), "/", str(field_arg(f, "name"))]))
}

allow_match contains ["github.graphql_query", "GraphQL query on granted repositories"] if {
	source == "sandbox"
	session_github_api
	gql_endpoint
	method == "POST"
	gql.operation_type == "query"
	gql_well_formed
	count([f | some f in gql_fields; not gql_query_field_ok(f)]) == 0
	refs := object.get(gql, "repositories", [])
	count([r | some r in refs; not gql_repo_ref_granted(r)]) == 0
}

# ---------------------------------------------------------------- mutations: specific denies (every source)

deny contains ["40", "github.merge", concat("", ["merging is denied at the proxy (GraphQL ", str(oget(f, "name")), ")"])] if {
	gql_endpoint
	some f in gql_fields
	f.name in merge_mutations
}

deny contains ["40", "github.mark_ready", "marking a pull request ready for review is denied at the proxy (GraphQL markPullRequestReadyForReview)"] if {
	gql_endpoint
	some f in gql_fields
	f.name == "markPullRequestReadyForReview"
}

deny contains ["40", "github.approve", concat("", ["approving a pull request is denied at the proxy (GraphQL ", str(oget(f, "name")), " with event APPROVE)"])] if {
	gql_endpoint
	some f in gql_fields
	f.name in {"addPullRequestReview", "submitPullRequestReview"}
	ev := field_input(f).event
	is_string(ev)
	regex.match(`^[A-Za-z_]+$`, ev)
	upper(ev) == "APPROVE"
}

deny contains ["40", "github.repo_settings", concat("", ["repository administration is denied (GraphQL ", str(oget(f, "name")), ")"])] if {
	gql_endpoint
	some f in gql_fields
	f.name in admin_mutations
}

deny contains ["40", "github.pr_base_change", "changing a pull request's base branch is denied (updatePullRequest baseRefName)"] if {
	gql_endpoint
	some f in gql_fields
	f.name == "updatePullRequest"
	has_key(field_input(f), "baseRefName")
}

deny contains ["40", "github.workflow_file", concat("", ["createCommitOnBranch touches ", str(oget(c, "path"))])] if {
	gql_endpoint
	some f in gql_fields
	f.name == "createCommitOnBranch"
	some kind in ["additions", "deletions"]
	some c in object.get(object.get(field_input(f), "fileChanges", {}), kind, [])
	is_workflow_path(c.path)
}

# ---------------------------------------------------------------- mutations: session binding (sandbox)

node_ids := object.get(session, "github_node_ids", {})

granted_repo_node_id(id) if {
	is_string(id)
	some r, nid in object.get(node_ids, "repositories", {})
	nid == id
	repo_granted(r)
}

session_pr_node_id(id) if {
	is_string(id)
	session_pr
	id == node_ids.pull_request
}

graphql_branch(name) := substring(name, 11, -1) if {
	is_string(name)
	startswith(name, "refs/heads/")
}

graphql_branch(name) := name if {
	is_string(name)
	not startswith(name, "refs/")
}

mutation_ok(f) if {
	f.name == "createRef"
	i := field_input(f)
	granted_repo_node_id(i.repositoryId)
	ref_in_case(i.name)
}

mutation_ok(f) if {
	f.name == "createCommitOnBranch"
	i := field_input(f)
	is_object(i.branch)
	repo_granted(i.branch.repositoryNameWithOwner)
	branch_in_case(graphql_branch(i.branch.branchName))
	not has_key(i.branch, "id")
	count(gql_commit_bad_paths(i)) == 0
}

mutation_ok(f) if {
	f.name == "createPullRequest"
	i := field_input(f)
	session_has_no_pr
	granted_repo_node_id(i.repositoryId)
	object.get(i, "headRepositoryId", i.repositoryId) == i.repositoryId
	branch_in_case(graphql_branch(i.headRefName))
	i.draft == true
}

gql_commit_bad_paths(i) := r if {
	file_changes := object.get(i, "fileChanges", {})
	r := [c |
		some kind in ["additions", "deletions"]
		changes := object.get(file_changes, kind, [])
		some c in changes
		bad_changed_path(c.path)
	]
}

gql_pr_update_fields := {"pullRequestId", "title", "body", "state", "maintainerCanModify", "clientMutationId"}

mutation_ok(f) if {
	f.name == "updatePullRequest"
	i := field_input(f)
	session_pr_node_id(i.pullRequestId)
	count(object.keys(i) - gql_pr_update_fields) == 0
}

mutation_ok(f) if {
	f.name == "addComment"
	session_pr_node_id(field_input(f).subjectId)
}

mutation_ok(f) if {
	f.name == "addPullRequestReviewComment"
	i := field_input(f)
	session_pr_node_id(i.pullRequestId)
	not has_key(i, "pullRequestReviewId")
}

mutation_ok(f) if {
	f.name == "addPullRequestReview"
	i := field_input(f)
	session_pr_node_id(i.pullRequestId)
	i.event == "COMMENT"
}

allow_match contains ["github.graphql_mutation", msg] if {
	source == "sandbox"
	session_github_api
	case_prefix
	gql_endpoint
	method == "POST"
	gql.operation_type == "mutation"
	gql_well_formed
	count([f | some f in gql_fields; not mutation_ok(f)]) == 0
	names := sort({f.name | some f in gql_fields})
	msg := concat("", ["GraphQL mutation ", concat(",", names), " within the session grant"])
}

gql_allowed_mutations := {"createRef", "createCommitOnBranch", "createPullRequest", "updatePullRequest", "addComment", "addPullRequestReviewComment", "addPullRequestReview"}

deny contains ["45", "github.graphql_mutation_not_allowed", concat("", ["GraphQL mutation ", str(oget(f, "name")), " is not allowed"])] if {
	gql_endpoint
	gql.operation_type == "mutation"
	some f in gql_fields
	not f.name in gql_allowed_mutations
}

deny contains ["45", "github.graphql_mutation_outside_grant", concat("", ["GraphQL mutation ", str(oget(f, "name")), " is outside the session grant (repository, case-branch prefix, session pull request, draft, COMMENT)"])] if {
	source == "sandbox"
	gql_endpoint
	gql.operation_type == "mutation"
	some f in gql_fields
	f.name in gql_allowed_mutations
	not mutation_ok(f)
}
