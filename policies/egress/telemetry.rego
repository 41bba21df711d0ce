# Telemetry connectors: aggregate reads only, per workspace connection.
#
# A connector workload (connector-metrics/-traces/-logs/-profiles) reaches
# only the hosts of its own kind's connections in its workspace
# (data.perfloop.workspaces[ws].telemetry[*]), and there only the endpoint
# shapes below. No writes anywhere. Raw-event endpoints are denied by name.
# A logs connection in mode "strict" allows no log endpoint at all.
#
# | provider | metrics                       | traces                    | logs (aggregate)                   | profiles         |
# |----------|-------------------------------|---------------------------|------------------------------------|------------------|
# | datadog  | v1 query, v2 timeseries/scalar| v2 spans aggregate        | v2 logs aggregate over indexes     | none             |
# |          | (data_source=metrics only),   | (group/filter keys: base  | (= log views), group by base keys  |                  |
# |          | metric metadata GETs          | + approved attributes)    |                                    |                  |
# | gcp      | timeSeries list w/ aggregation| traces list view=MINIMAL  | Log Analytics SQL aggregate over   | none             |
# |          | timeSeries:query w/ group/align| (ids only, no attributes)| log views (conservative check)     |                  |
# |          | PromQL query, descriptors     |                           | log-based metric definitions       |                  |
# | grafana  | /api/ds/query on declared     | none                      | /api/ds/query, LogQL metric query  | /api/ds/query on |
# |          | datasource uids (PromQL)      |                           | on declared uids and named streams | declared uids    |
# | axiom    | APL with summarize            | APL with summarize,       | APL with summarize over log views, | none             |
# |          |                               | approved attributes only  | no raw message columns             |                  |
package perfloop.egress

import rego.v1

connector_kind := connector_kinds[source]

telemetry_entries contains e if {
	is_connector
	some e in workspace.telemetry
	e.kind == connector_kind
	e.host == host
}

has_tele(provider) if {
	some e in telemetry_entries
	e.provider == provider
	e.mode == "aggregate"
}

logs_strict if {
	source == "connector-logs"
	some e in telemetry_entries
	e.mode == "strict"
}

tele_log_views contains lower(v) if {
	some e in telemetry_entries
	some v in e.log_views
}

tele_datasources contains u if {
	some e in telemetry_entries
	some u in e.datasource_uids
}

# Trace attributes: the connection's allowlist (set by the customer) AND the
# keys approved for this case (input.session.trace_attributes). Default none.
tele_trace_keys contains k if {
	some e in telemetry_entries
	some k0 in e.trace_attribute_allowlist
	k := trim_prefix(k0, "@")
	k in {trim_prefix(x, "@") | some x in session.trace_attributes; is_string(x)}
}

# ---------------------------------------------------------------- generic denies

deny contains ["40", "telemetry.logs_strict", concat("", ["logs connection ", host, " is in strict mode: no log permission at all"])] if {
	logs_strict
}

deny contains ["40", "telemetry.write", concat("", ["telemetry connectors never write (", method, " ", path, ")"])] if {
	is_connector
	count(telemetry_entries) > 0
	method in {"PUT", "PATCH", "DELETE"}
}

raw_endpoint_rules := [
	[`^/api/v1/logs-queries/list$`, "telemetry.raw_logs"],
	[`^/api/v2/logs/events(/search)?$`, "telemetry.raw_logs"],
	[`^/api/v2/spans/events(/search)?$`, "telemetry.raw_events"],
	[`^/api/v2/rum/events(/search)?$`, "telemetry.raw_events"],
	[`^/v2/entries:(list|tail|copy|write)$`, "telemetry.raw_logs"],
	[`^/v1/projects/[^/]+/traces/[^/]+$`, "telemetry.raw_events"],
	[`^/v1/datasets/[^/]+/query$`, "telemetry.raw_events"],
]

deny contains ["40", r[1], concat("", [path, " returns raw events; only aggregate reads are allowed"])] if {
	is_connector
	some r in raw_endpoint_rules
	regex.match(r[0], path)
}

deny contains ["40", "telemetry.profiles_not_modelled", concat("", ["no aggregate-only profile endpoint is modelled for ", e.provider])] if {
	source == "connector-profiles"
	some e in telemetry_entries
	e.provider != "grafana"
}

deny contains ["45", "telemetry.endpoint_not_allowed", concat("", [method, " ", path, " is not an aggregate read endpoint for ", source])] if {
	is_connector
	count(telemetry_entries) > 0
	not logs_strict
	count({a | some a in allow_match; startswith(a[0], "telemetry.")}) == 0
}

dd_aggregations := {"count", "cardinality", "pc75", "pc90", "pc95", "pc98", "pc99", "sum", "min", "max", "avg", "median"}

# ---------------------------------------------------------------- Datadog metrics

allow_match contains ["telemetry.datadog_metrics", "Datadog metric query"] if {
	source == "connector-metrics"
	has_tele("datadog")
	method == "GET"
	path == "/api/v1/query"
	qparam("query")
}

allow_match contains ["telemetry.datadog_metrics", "Datadog metric metadata"] if {
	source == "connector-metrics"
	has_tele("datadog")
	method == "GET"
	regex.match(`^/api/v1/metrics(/[A-Za-z0-9_.]+)?$`, path)
}

allow_match contains ["telemetry.datadog_metrics", "Datadog v2 metric formula query (data_source=metrics)"] if {
	source == "connector-metrics"
	has_tele("datadog")
	method == "POST"
	path in {"/api/v2/query/timeseries", "/api/v2/query/scalar"}
	dd_metrics_only
}

dd_v2_queries := body.data.attributes.queries if is_array(body.data.attributes.queries)

dd_metrics_only if {
	count(dd_v2_queries) > 0
	count([q | some q in dd_v2_queries; not q.data_source == "metrics"]) == 0
}

deny contains ["40", "telemetry.metrics_data_source", "the metrics connector may query data_source=metrics only (logs/spans/rum event sources are not metrics)"] if {
	source == "connector-metrics"
	has_tele("datadog")
	path in {"/api/v2/query/timeseries", "/api/v2/query/scalar"}
	not dd_metrics_only
}

# ---------------------------------------------------------------- Datadog traces

span_base_keys := {"service", "resource_name", "operation_name", "env", "version", "status"}

span_key_allowed(k) if {
	is_string(k)
	trim_prefix(k, "@") in span_base_keys
}

span_key_allowed(k) if {
	is_string(k)
	trim_prefix(k, "@") in tele_trace_keys
}

span_key_allowed(k) if k == "@duration"

dd_span_attrs := body.data.attributes if is_object(body.data.attributes)

dd_span_keys_used contains g.facet if {
	some g in object.get(dd_span_attrs, "group_by", [])
}

dd_span_keys_used contains c.metric if {
	some c in object.get(dd_span_attrs, "compute", [])
	has_key(c, "metric")
}

dd_span_keys_used contains r if {
	q := object.get(object.get(dd_span_attrs, "filter", {}), "query", "")
	some r in regex.find_n(`@[A-Za-z0-9_.\-]+`, str(q), -1)
}

dd_span_aggregate_ok if {
	dd_span_attrs
	count(object.get(dd_span_attrs, "compute", [])) > 0
	count([c | some c in dd_span_attrs.compute; not c.aggregation in dd_aggregations]) == 0
	count([k | some k in dd_span_keys_used; not span_key_allowed(k)]) == 0
}

allow_match contains ["telemetry.datadog_traces", "Datadog span aggregate over approved keys"] if {
	source == "connector-traces"
	has_tele("datadog")
	method == "POST"
	path == "/api/v2/spans/analytics/aggregate"
	dd_span_aggregate_ok
}

deny contains ["40", "telemetry.trace_attribute", concat("", ["span attribute ", str(k), " is not approved for this case (trace_attribute_allowlist and session trace_attributes)"])] if {
	source == "connector-traces"
	has_tele("datadog")
	path == "/api/v2/spans/analytics/aggregate"
	some k in dd_span_keys_used
	not span_key_allowed(k)
}

# ---------------------------------------------------------------- Datadog logs

log_group_keys := {"service", "status", "env", "version", "source", "host"}

raw_log_columns := {"message", "msg", "body", "log", "text", "content", "_raw", "raw", "error.stack", "error.message"}

dd_log_measure_ok(c) if not "metric" in object.keys(c)

dd_log_measure_ok(c) if {
	is_string(c.metric)
	not lower(trim_prefix(c.metric, "@")) in raw_log_columns
}

dd_logs_aggregate_ok if {
	indexes := body.filter.indexes
	is_array(indexes)
	count(indexes) > 0
	count([i | some i in indexes; not lower(str(i)) in tele_log_views]) == 0
	count(object.get(body, "compute", [])) > 0
	count([c | some c in body.compute; not dd_log_compute_ok(c)]) == 0
	groups := object.get(body, "group_by", [])
	count([g | some g in groups; not lower(trim_prefix(str(oget(g, "facet")), "@")) in log_group_keys]) == 0
}

dd_log_compute_ok(c) if {
	c.aggregation in dd_aggregations
	dd_log_measure_ok(c)
}

allow_match contains ["telemetry.datadog_logs", "Datadog log aggregate over customer-named indexes"] if {
	source == "connector-logs"
	has_tele("datadog")
	not logs_strict
	method == "POST"
	path == "/api/v2/logs/analytics/aggregate"
	dd_logs_aggregate_ok
}

deny contains ["40", "telemetry.log_view", concat("", ["log aggregate must name only customer log views (indexes) ", concat(",", tele_log_views)])] if {
	source == "connector-logs"
	has_tele("datadog")
	path == "/api/v2/logs/analytics/aggregate"
	not dd_log_indexes_ok
}

dd_log_indexes_ok if {
	count(body.filter.indexes) > 0
	count([i | some i in body.filter.indexes; not lower(str(i)) in tele_log_views]) == 0
}

deny contains ["40", "telemetry.log_group_by", concat("", ["log aggregates may group only by ", concat(",", log_group_keys), ", not ", str(oget(g, "facet"))])] if {
	source == "connector-logs"
	path == "/api/v2/logs/analytics/aggregate"
	some g in object.get(body, "group_by", [])
	not lower(trim_prefix(str(oget(g, "facet")), "@")) in log_group_keys
}

# ---------------------------------------------------------------- Google Cloud

gcp_project_re := `[a-z][a-z0-9-]{4,28}[a-z0-9]`

gcp_ts_aggregated if qparam("aggregation.perSeriesAligner")

gcp_ts_aggregated if qparam("aggregation.crossSeriesReducer")

allow_match contains ["telemetry.gcp_metrics", "Cloud Monitoring timeSeries.list with aggregation"] if {
	source == "connector-metrics"
	has_tele("gcp")
	host == "monitoring.googleapis.com"
	method == "GET"
	regex.match(concat("", [`^/v3/projects/`, gcp_project_re, `/timeSeries$`]), path)
	qparam("filter")
	gcp_ts_aggregated
}

deny contains ["40", "telemetry.aggregate_required", "timeSeries.list needs aggregation.perSeriesAligner or aggregation.crossSeriesReducer"] if {
	source == "connector-metrics"
	host == "monitoring.googleapis.com"
	regex.match(`^/v3/projects/[^/]+/timeSeries$`, path)
	not gcp_ts_aggregated
}

allow_match contains ["telemetry.gcp_metrics", "Cloud Monitoring timeSeries.query (MQL) with group_by/align"] if {
	source == "connector-metrics"
	has_tele("gcp")
	host == "monitoring.googleapis.com"
	method == "POST"
	regex.match(concat("", [`^/v3/projects/`, gcp_project_re, `/timeSeries:query$`]), path)
	regex.match(`\|\s*(group_by|align|every)\b`, str(body.query))
}

allow_match contains ["telemetry.gcp_metrics", "Cloud Monitoring metric descriptors"] if {
	source == "connector-metrics"
	has_tele("gcp")
	host == "monitoring.googleapis.com"
	method == "GET"
	regex.match(concat("", [`^/v3/projects/`, gcp_project_re, `/metricDescriptors(/[A-Za-z0-9._/-]+)?$`]), path)
}

allow_match contains ["telemetry.gcp_metrics", "Managed Prometheus PromQL query"] if {
	source == "connector-metrics"
	has_tele("gcp")
	host == "monitoring.googleapis.com"
	method in {"GET", "POST"}
	regex.match(concat("", [`^/v1/projects/`, gcp_project_re, `/location/global/prometheus/api/v1/(query|query_range)$`]), path)
}

allow_match contains ["telemetry.gcp_traces", "Cloud Trace list, MINIMAL view (trace ids only, no attributes)"] if {
	source == "connector-traces"
	has_tele("gcp")
	host == "cloudtrace.googleapis.com"
	method == "GET"
	regex.match(concat("", [`^/v1/projects/`, gcp_project_re, `/traces$`]), path)
	qparam("view") == "MINIMAL"
}

deny contains ["40", "telemetry.raw_events", "Cloud Trace lists are allowed only with view=MINIMAL (ROOTSPAN/COMPLETE return span attributes)"] if {
	source == "connector-traces"
	host == "cloudtrace.googleapis.com"
	regex.match(`^/v1/projects/[^/]+/traces$`, path)
	not qparam("view") == "MINIMAL"
}

allow_match contains ["telemetry.gcp_logs", "log-based metric definitions"] if {
	source == "connector-logs"
	has_tele("gcp")
	not logs_strict
	host == "logging.googleapis.com"
	method == "GET"
	regex.match(concat("", [`^/v2/projects/`, gcp_project_re, `/metrics(/[A-Za-z0-9._-]+)?$`]), path)
}

gcp_log_query_path if regex.match(concat("", [`^/v2/projects/`, gcp_project_re, `/locations/[a-z0-9-]+:queryData$`]), path)

gcp_log_query_path if path == "/v2/entries:queryData"

allow_match contains ["telemetry.gcp_logs", "Log Analytics aggregate SQL over customer log views"] if {
	source == "connector-logs"
	has_tele("gcp")
	not logs_strict
	host == "logging.googleapis.com"
	method == "POST"
	gcp_log_query_path
	count(sql_problems) == 0
}

deny contains ["40", "telemetry.log_sql", concat("", ["Log Analytics query rejected: ", p])] if {
	source == "connector-logs"
	host == "logging.googleapis.com"
	gcp_log_query_path
	some p in sql_problems
}

# The SQL text, lower-cased, whitespace collapsed.
sql := regex.replace(unescape_ws(lower(body.query.sqlQueryText)), `\s+`, " ") if is_string(body.query.sqlQueryText)

# Input strings are held JSON-escaped by the engine (see README, "Engine
# notes"): a newline in a query is the two characters "\n" here.
unescape_ws(s) := regex.replace(s, `\\[nrt]`, " ")

_sql_from_matches := regex.find_all_string_submatch_n(`\b(from|join)\s+([^\s,()]+)`, sql, -1)

sql_from_targets := [replace(m[2], "`", "") | some m in _sql_from_matches]

sql_problems contains "body.query.sqlQueryText is missing" if not sql

sql_problems contains "comments, \";\" or \"#\" are not allowed (single statement only)" if regex.match(`;|--|/\*|\*/|#`, sql)

sql_problems contains "an aggregate needs GROUP BY" if {
	sql
	not regex.match(`\bgroup by\b`, sql)
}

sql_problems contains "an aggregate function (COUNT, SUM, AVG, MIN, MAX, APPROX_QUANTILES, ...) is required" if {
	sql
	not regex.match(`\b(count|countif|sum|avg|min|max|approx_count_distinct|approx_quantiles|percentile_cont|stddev|variance)\s*\(`, sql)
}

sql_problems contains "\"*\" is allowed only as COUNT(*)" if contains(regex.replace(sql, `count\s*\(\s*\*\s*\)`, ""), "*")

sql_problems contains concat("", ["raw column or function ", m, " is not allowed"]) if {
	some m in regex.find_n(`\b(text_payload|json_payload|proto_payload|http_request|trace|span_id|trace_sampled|source_location|operation|split|error_groups|insert_id)\b`, sql, -1)
}

sql_problems contains "top-level labels (payload labels) are not allowed; resource.labels are" if regex.match(`(^|[^.a-z0-9_])labels\b`, sql)

sql_problems contains concat("", ["construct ", m, " is not allowed"]) if {
	some m in regex.find_n(`\b(union|join|unnest|with|into|insert|update|delete|merge|create|drop|alter|array_agg|string_agg|any_value|array|struct|to_json|to_json_string|json_value|json_query|json_extract|json_extract_scalar|format|concat|substr|substring|regexp_extract|regexp_extract_all|left|right|lag|lead|first_value|last_value|nth_value|execute)\b`, sql, -1)
}

sql_problems contains "comma joins are not allowed" if regex.match(`\bfrom\s+[^\s,()]+\s*,`, sql)

sql_problems contains "every FROM must name a log view directly (no sub-queries)" if {
	sql
	count(regex.find_n(`\bfrom\b`, sql, -1)) != count(sql_from_targets)
}

sql_problems contains "no FROM clause" if {
	sql
	count(sql_from_targets) == 0
}

sql_problems contains concat("", [t, " is not one of the customer's log views"]) if {
	some t in sql_from_targets
	not t in tele_log_views
}

# ---------------------------------------------------------------- Grafana

gf_queries := body.queries if {
	is_array(body.queries)
	count(body.queries) > 0
}

gf_datasources_ok if {
	count([q | some q in gf_queries; not gf_datasource_ok(q)]) == 0
}

gf_datasource_ok(q) if {
	is_object(q.datasource)
	q.datasource.uid in tele_datasources
}

deny contains ["40", "telemetry.datasource", "every Grafana query must name a declared datasource uid of this connection"] if {
	is_connector
	has_tele("grafana")
	path == "/api/ds/query"
	not gf_datasources_ok
}

allow_match contains ["telemetry.grafana_metrics", "Grafana metric query on declared datasources"] if {
	source == "connector-metrics"
	has_tele("grafana")
	method == "POST"
	path == "/api/ds/query"
	gf_datasources_ok
	count([q | some q in gf_queries; not is_string(q.expr)]) == 0
}

allow_match contains ["telemetry.grafana_metrics", "Prometheus query through a declared Grafana datasource"] if {
	source == "connector-metrics"
	has_tele("grafana")
	method == "GET"
	parts := regex.find_all_string_submatch_n(`^/api/datasources/proxy/uid/([A-Za-z0-9_-]+)/api/v1/(query|query_range)$`, path, 1)
	count(parts) == 1
	parts[0][1] in tele_datasources
	qparam("query")
}

allow_match contains ["telemetry.grafana_profiles", "Grafana (Pyroscope) merged profile query on declared datasources"] if {
	source == "connector-profiles"
	has_tele("grafana")
	method == "POST"
	path == "/api/ds/query"
	gf_datasources_ok
	count([q | some q in gf_queries; not object.get(q, "queryType", "profile") in {"profile", "metrics", "both"}]) == 0
}

allow_match contains ["telemetry.grafana_logs", "Loki metric (aggregate) query over customer-named streams"] if {
	source == "connector-logs"
	has_tele("grafana")
	not logs_strict
	method == "POST"
	path == "/api/ds/query"
	gf_datasources_ok
	count([q | some q in gf_queries; count(logql_problems(q.expr)) > 0]) == 0
}

deny contains ["40", "telemetry.logql", concat("", ["LogQL rejected: ", p])] if {
	source == "connector-logs"
	has_tele("grafana")
	path == "/api/ds/query"
	some q in gf_queries
	some p in logql_problems(q.expr)
}

logql_problems(e) := {"expr must be a string"} if not is_string(e)

logql_problems(e) := r if {
	is_string(e)
	checks := object.keys(logql_messages)
	s := strip_space(unescape_ws(e))
	r := {logql_messages[c] | some c in checks; logql_fails(c, s)}
}

logql_messages := {
	"metric": "must be a metric query (aggregation or range function), not a log stream query",
	"range": "needs a range aggregation (count_over_time, rate, bytes_over_time, ...)",
	"pipeline": "parser, formatting and unwrap stages (| json, | logfmt, | line_format, ...) are not allowed",
	"selector": "every stream selector must be one of the customer's log views",
	"none": "no stream selector",
}

logql_fails(c, s) if {
	c == "metric"
	not regex.match(`^((sum|avg|min|max|count|stddev|stdvar|topk|bottomk|sort|sort_desc)\b|(count_over_time|rate|bytes_over_time|bytes_rate|absent_over_time)\s*\()`, s)
}

logql_fails(c, s) if {
	c == "range"
	not regex.match(`\b(count_over_time|rate|bytes_over_time|bytes_rate|absent_over_time)\s*\(`, s)
}

# Only line filters (|= != |~ !~) may appear; any other "|" is a stage.
logql_fails(c, s) if {
	c == "pipeline"
	contains(replace(replace(s, "|=", ""), "|~", ""), "|")
}

logql_fails(c, s) if {
	c == "selector"
	some sel in regex.find_n(`\{[^}]*\}`, s, -1)
	not regex.replace(sel, `\s+`, "") in logql_views
}

logql_fails(c, s) if {
	c == "none"
	count(regex.find_n(`\{[^}]*\}`, s, -1)) == 0
}

logql_views := {regex.replace(v, `\s+`, "") | some v in tele_log_views}

# ---------------------------------------------------------------- Axiom (customer telemetry, read side)

apl := unescape_ws(lower(body.apl)) if is_string(body.apl)

_apl_dataset_matches := regex.find_all_string_submatch_n(`\[\s*'([^']*)'\s*\]`, apl, -1)

apl_dataset_refs := [m[1] | some m in _apl_dataset_matches]

apl_problems contains "double-quoted names are not supported; use ['name']" if contains(apl, "\"")

apl_problems contains "body.apl is missing" if not apl

apl_problems contains "APL must aggregate with | summarize" if {
	apl
	not regex.match(`\|\s*summarize\b`, apl)
}

apl_problems contains concat("", ["APL operator or function ", m, " is not allowed"]) if {
	some m in regex.find_n(`\b(project|project-away|project-keep|project-rename|project-reorder|take|limit|sample|getschema|make_list|make_list_if|make_set|make_set_if|make_bag|arg_max|arg_min|parse|extend|search|top|distinct|externaldata|join|union|lookup|mv-expand|print|render|any|anyif)\b`, apl, -1)
}

apl_problems contains "APL must name its datasets as ['name']" if {
	apl
	count(apl_dataset_refs) == 0
}

apl_problems contains concat("", ["dataset ", d, " is not one of the customer's log views"]) if {
	source == "connector-logs"
	some d in apl_dataset_refs
	not d in tele_log_views
}

apl_problems contains concat("", ["raw log column ", m, " is not allowed"]) if {
	source == "connector-logs"
	some m in regex.find_n(`\b(message|msg|body|log|text|content|_raw|raw)\b`, apl, -1)
}

apl_problems contains concat("", ["trace attribute ", k, " is not approved for this case"]) if {
	source == "connector-traces"
	some m in regex.find_n(`attributes\.[a-z0-9_.\-]+`, apl, -1)
	k := trim_prefix(trim_prefix(m, "attributes."), "custom.")
	not k in {lower(x) | some x in tele_trace_keys}
}

allow_match contains ["telemetry.axiom_query", "Axiom APL aggregate (summarize)"] if {
	is_connector
	source != "connector-profiles"
	has_tele("axiom")
	not logs_strict
	method == "POST"
	path == "/v1/datasets/_apl"
	count(apl_problems) == 0
}

deny contains ["40", "telemetry.apl", concat("", ["Axiom query rejected: ", p])] if {
	is_connector
	host == axiom_host
	path == "/v1/datasets/_apl"
	some p in apl_problems
}
