# Destinations that are never reachable, hard invariants on the platform's
# own subprocessors, and the confinement of each source to its destinations.
package perfloop.egress

import rego.v1

# ---------------------------------------------------------------- never

never_hosts := {
	"localhost",
	"metadata",
	"metadata.google.internal",
	"metadata.goog",
	"instance-data",
	"kubernetes",
	"kubernetes.default",
	"kubernetes.default.svc",
	"kubernetes.default.svc.cluster.local",
	"localtest.me",
	"lvh.me",
}

# Suffixes of names that are cluster-, node- or host-internal, or wildcard
# DNS services that map a name onto an arbitrary IP (169.254.169.254.nip.io).
never_suffixes := [
	".localhost",
	".internal",
	".svc",
	".cluster.local",
	".local",
	".localdomain",
	".home.arpa",
	".arpa",
	".nip.io",
	".sslip.io",
	".xip.io",
	".localtest.me",
	".lvh.me",
]

# Model endpoints other than the region-pinned Vertex AI endpoint.
model_hosts := {
	"api.openai.com",
	"api.anthropic.com",
	"generativelanguage.googleapis.com",
	"aiplatform.googleapis.com",
	"api.mistral.ai",
	"api.cohere.ai",
	"api.cohere.com",
	"api.groq.com",
	"api.together.xyz",
	"api.together.ai",
	"api.deepseek.com",
	"api.x.ai",
	"api.fireworks.ai",
	"api.perplexity.ai",
	"openrouter.ai",
	"api-inference.huggingface.co",
	"router.huggingface.co",
}

model_host_suffixes := [".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com"]

is_never_host(h) if h in never_hosts

is_never_host(h) if {
	some sfx in never_suffixes
	endswith(h, sfx)
}

is_api_server_host(h) if {
	some a in data.perfloop.api_server_hosts
	lower(trim_suffix(a, ".")) == h
}

deny contains ["20", "destination.never", concat("", ["host ", host, " is cloud-metadata, cluster-internal or loopback; never reachable"])] if {
	is_never_host(host)
}

deny contains ["20", "destination.api_server", concat("", ["host ", host, " is the cluster API server endpoint; never reachable"])] if {
	is_api_server_host(host)
}

# The raw host as given, before normalisation, is also checked so that a
# malformed spelling of a never-host gets the more specific reason.
deny contains ["20", "destination.never", concat("", ["host ", _host_candidate, " is cloud-metadata, cluster-internal or loopback; never reachable"])] if {
	not host
	is_never_host(_host_candidate)
}

# Optional defence against DNS rebinding: when the proxy passes the
# addresses it resolved (input.resolved_addresses), none may be private,
# loopback, link-local, CGNAT, multicast or otherwise special.
deny contains ["20", "destination.private_address", concat("", ["host ", _d_host, " resolved to non-public address ", str(a)])] if {
	is_array(input.resolved_addresses)
	some a in input.resolved_addresses
	not public_address(a)
}

public_address(a) if {
	is_string(a)
	regex.match(`^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$`, a)
	parts := split(a, ".")
	octets := [to_number(o) | some o in parts]
	count([o | some o in octets; o > 255]) == 0
	not private_v4(octets)
}

public_address(a) if {
	is_string(a)
	contains(a, ":")
	v := lower(a)
	regex.match(`^[0-9a-f:]+$`, v)
	not private_v6(v)
}

private_v4(o) if o[0] == 0

private_v4(o) if o[0] == 10

private_v4(o) if o[0] == 127

private_v4(o) if o[0] >= 224

private_v4(o) if {
	o[0] == 100
	o[1] >= 64
	o[1] <= 127
}

private_v4(o) if {
	o[0] == 169
	o[1] == 254
}

private_v4(o) if {
	o[0] == 172
	o[1] >= 16
	o[1] <= 31
}

private_v4(o) if {
	o[0] == 192
	o[1] == 168
}

private_v4(o) if {
	o[0] == 192
	o[1] == 0
	o[2] == 0
}

private_v4(o) if {
	o[0] == 198
	o[1] >= 18
	o[1] <= 19
}

# IPv6 in its canonical text form: unspecified, loopback, v4-mapped/compat
# (all start with "::" or "0:"), ULA fc00::/7, link-local fe80::/10, site-local
# fec0::/10, multicast ff00::/8, NAT64 64:ff9b::/96, 6to4 2002::/16.
private_v6(v) if regex.match(`^(::|0+:|f[c-f]|64:ff9b:|2002:)`, v)

# ---------------------------------------------------------------- models / subprocessors

vertex_host := concat("", [data.perfloop.region, "-aiplatform.googleapis.com"])

is_vertex_like(h) if endswith(h, "-aiplatform.googleapis.com")

is_vertex_like(h) if h == "aiplatform.googleapis.com"

is_model_host(h) if h in model_hosts

is_model_host(h) if {
	some sfx in model_host_suffixes
	endswith(h, sfx)
}

is_model_host(h) if {
	is_vertex_like(h)
	h != vertex_host
}

deny contains ["25", "platform.model_endpoint", concat("", ["host ", host, " is a model endpoint; the only model endpoint is Vertex AI in ", str(data.perfloop.region), " from agent-orchestrator"])] if {
	is_model_host(host)
}

deny contains ["25", "platform.vertex_source", concat("", ["Vertex AI is reachable only from agent-orchestrator, not from ", str(source)])] if {
	host == vertex_host
	source != "agent-orchestrator"
}

is_workos_host(h) if h == "api.workos.com"

is_workos_host(h) if endswith(h, ".workos.com")

deny contains ["25", "platform.workos_source", concat("", ["WorkOS is reachable only from control-plane-api, not from ", str(source)])] if {
	is_workos_host(host)
	source != "control-plane-api"
}

axiom_host := "api.axiom.co"

axiom_ingest_path if regex.match(`^/v1/datasets/[A-Za-z0-9_.-]+/ingest$`, path)

axiom_ingest_path if path in {"/v1/traces", "/v1/logs", "/v1/metrics"}

deny contains ["25", "platform.axiom_ingest_source", concat("", ["Axiom ingest carries Perfloop's own telemetry and is allowed only from designated platform workloads, not from ", str(source)])] if {
	host == axiom_host
	axiom_ingest_path
	not axiom_ingest_designated
}

axiom_ingest_designated if {
	is_platform_workload
	axiom_host in object.get(data.perfloop.platform_destinations, source, [])
}

# ---------------------------------------------------------------- source scope

deny contains ["30", "source.sandbox_scope", concat("", ["the sandbox reaches only its workspace's code host within the session grant; ", host, " is not it"])] if {
	source == "sandbox"
	host
	not is_code_host(host)
}

is_code_host(h) if h == code_host.api_host

is_code_host(h) if h == code_host.git_host

connector_hosts contains e.host if {
	some e in workspace.telemetry
	e.kind == connector_kinds[source]
}

deny contains ["30", "source.connector_scope", concat("", [source, " has no ", connector_kinds[source], " connection to ", host, " in workspace ", workspace_id])] if {
	is_connector
	workspace
	host
	not host in connector_hosts
	not host in object.get(data.perfloop.platform_destinations, source, [])
}

deny contains ["30", "source.platform_scope", concat("", [host, " is not a declared destination of ", source, " (data.perfloop.platform_destinations)"])] if {
	is_platform_workload
	host
	not host in object.get(data.perfloop.platform_destinations, source, [])
}

# ---------------------------------------------------------------- platform allows

# Platform workloads are Perfloop's own code, not the agent: a declared
# destination is reachable on any path, except the hosts with a fixed shape
# below (Vertex AI, Axiom) whose paths are pinned.
allow_match contains ["platform.destination", concat("", [host, " is a declared destination of ", source])] if {
	not source == "sandbox"
	host in object.get(data.perfloop.platform_destinations, source, [])
	not host == vertex_host
	not host == axiom_host
}

vertex_call_ok if {
	method == "POST"
	regex.match(
		concat("", [`^/v1(beta1)?/projects/[a-z0-9-]+/locations/`, data.perfloop.region, `/publishers/[a-z0-9-]+/models/[A-Za-z0-9._@-]+:(generateContent|streamGenerateContent|countTokens|rawPredict|streamRawPredict|predict)$`]),
		path,
	)
}

allow_match contains ["platform.vertex", concat("", ["Vertex AI inference in ", data.perfloop.region, " from agent-orchestrator"])] if {
	source == "agent-orchestrator"
	host == vertex_host
	host in object.get(data.perfloop.platform_destinations, source, [])
	vertex_call_ok
}

deny contains ["40", "platform.vertex_path", "agent-orchestrator may only call model inference methods (POST ...:generateContent etc.) on Vertex AI in the configured region"] if {
	source == "agent-orchestrator"
	host == vertex_host
	not vertex_call_ok
}

allow_match contains ["platform.axiom_ingest", "Perfloop operational telemetry ingest to Axiom"] if {
	is_platform_workload
	host == axiom_host
	axiom_ingest_designated
	method == "POST"
	axiom_ingest_path
}

deny contains ["40", "platform.axiom_ingest_only", "platform workloads may only ingest to Axiom (POST to an ingest path), never query it"] if {
	is_platform_workload
	host == axiom_host
	not axiom_ingest_path
}

deny contains ["40", "platform.axiom_ingest_only", "platform workloads may only ingest to Axiom (POST to an ingest path), never query it"] if {
	is_platform_workload
	host == axiom_host
	method != "POST"
}
