# Perfloop egress policy: entry point.
#
# Query data.perfloop.egress.decision. It is always exactly one object
#   {"allow": bool, "reason": string, "rule": string}
# and it is deny unless an allow rule matched AND no deny rule matched.
#
# Rules are collected as:
#   deny        contains [priority, rule, reason]   (priority: 2-digit string)
#   allow_match contains [rule, reason]
# A deny always wins over an allow. Among several denies the one with the
# lowest priority (then rule name) is reported, so the most basic problem is
# the one a reviewer sees first:
#   10 malformed / ambiguous request (normalisation)
#   20 never-destinations (metadata, cluster-internal, IP ranges, API server)
#   25 hard invariants on platform destinations (WorkOS, Vertex AI, models)
#   30 source scope (sandbox and connectors confined to their destinations)
#   40 specific operation denies (merge, approve, mark-ready, other branch...)
#   45 generic denies inside a known API (unknown mutation, raw endpoint...)
package perfloop.egress

import rego.v1

known_sources := {
	"sandbox",
	"egress-proxy",
	"control-plane-api",
	"session-controller",
	"agent-orchestrator",
	"connector-metrics",
	"connector-traces",
	"connector-logs",
	"connector-profiles",
	"audit-cleanup",
	"db-migrate",
}

connector_kinds := {
	"connector-metrics": "metrics",
	"connector-traces": "traces",
	"connector-logs": "logs",
	"connector-profiles": "profiles",
}

platform_workloads := known_sources - {"sandbox"} - object.keys(connector_kinds)

is_connector if source in object.keys(connector_kinds)

is_platform_workload if source in platform_workloads

# ---------------------------------------------------------------- decision

# NOTE: regopy's sort() result cannot be indexed directly; it is copied into
# an array comprehension first. sort() orders the 2-digit string priorities
# correctly (it compares numbers as strings, hence strings here).
_deny_sort := sort(deny)

_allow_sort := sort(allow_match)

_sorted_denies := [x | some x in _deny_sort]

_sorted_allows := [x | some x in _allow_sort]

# A deny always wins. The allow branch re-checks that no deny exists, so an
# evaluation problem in the first branch can only ever fall through to the
# default deny, never to an allow.
decision := _deny_decision if {
	count(deny) > 0
} else := _allow_decision if {
	count(deny) == 0
	request_well_formed
	count(allow_match) > 0
} else := _default_decision

# Positive preconditions of every allow, restating the basic normalisation
# denies. Belt and braces: if a deny rule ever failed to evaluate (e.g. its
# message could not be built), these still keep the request from an allow.
request_well_formed if {
	source in known_sources
	scheme == "https"
	method in allowed_methods
	host
	port_valid
	port_declared
	path_well_formed
	query_well_formed
	headers_well_formed
	shape_ok(object.get(input, "headers", null), "object")
	shape_ok(object.get(input, "query", null), "string")
	shape_ok(object.get(input, "body", null), "object")
}

# A field is absent/null or of the expected JSON type.
shape_ok(v, _) if v == null

shape_ok(v, t) if type_name(v) == t

path_well_formed if {
	startswith(raw_path, "/")
	not regex.match(path_bad_char_re, raw_path)
	not malformed_escape(raw_path)
	not regex.match(double_encoding_re, raw_path)
	not regex.match(encoded_unsafe_re, raw_path)
	count([i | seg := raw_segments[i]; regex.match(encoded_separator_re, seg); not encoded_separator_exempt(i)]) == 0
	count([s | some s in segments; s in {".", ".."}]) == 0
}

query_well_formed if {
	not regex.match(query_bad_char_re, raw_query)
	not malformed_escape(raw_query)
	not regex.match(double_encoding_re, raw_query)
	not regex.match(encoded_unsafe_re, raw_query)
	count([p | some p in query_pairs; lower(strip_space(p[0])) in method_override_query_keys]) == 0
}

headers_well_formed if {
	count(header_names & method_override_headers) == 0
	count(header_names & path_override_headers) == 0
	count([n | some n in header_names; n in credential_headers; source in credential_free_sources]) == 0
	host_headers := header_values("host")
	count([v | some v in host_headers; not host_header_matches(lower(str(v)))]) == 0
}

_deny_decision := {"allow": false, "rule": d[1], "reason": d[2]} if {
	d := _sorted_denies[0]
}

_allow_decision := {"allow": true, "rule": a[0], "reason": a[1]} if {
	a := _sorted_allows[0]
}

_default_decision := {
	"allow": false,
	"rule": "default.deny",
	"reason": concat("", ["no rule allows ", _d_method, " ", _d_host, _d_path, " for source ", _d_source, " (deny by default)"]),
}

default _d_method := "(invalid method)"

_d_method := method

default _d_host := "(invalid host)"

_d_host := host

default _d_path := "(invalid path)"

_d_path := path

default _d_source := "(unknown source)"

_d_source := source

# Convenience views for debugging and tests.
allowed := decision.allow

all_denies := _sorted_denies

# ---------------------------------------------------------------- session

# The session grant, {} when absent or not an object.
session := input.session if is_object(input.session)

session := {} if not is_object(input.session)

workspace_id := session.workspace if is_string(session.workspace)

workspace := data.perfloop.workspaces[workspace_id]

code_host := workspace.code_host if is_object(workspace.code_host)

deny contains ["30", "session.workspace", concat("", ["source ", source, " needs a session for a known workspace; got ", str(object.get(session, "workspace", null))])] if {
	source == "sandbox"
	not workspace
}

deny contains ["30", "session.workspace", concat("", ["connector ", source, " needs a known workspace in input.session.workspace"])] if {
	is_connector
	not workspace
}
