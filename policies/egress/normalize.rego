# Request normalisation for the Perfloop egress policy.
#
# Everything the allow/deny rules look at is derived here from the raw request
# the proxy received (input.*). The proxy passes values through as received;
# it does not canonicalise anything itself, so it cannot get it wrong.
#
# Decisions taken here (see README.md, "Normalisation"):
#   * method      : upper-cased; only GET HEAD POST PUT PATCH DELETE exist.
#   * overrides   : any method-override header or query parameter => deny.
#   * scheme      : lower-cased; only https.
#   * host        : lower-cased, ONE trailing dot removed, must be an LDH
#                   hostname with at least one dot; IP literals of any form
#                   (v4 dotted/decimal/octal/hex, v6) => deny.
#   * port        : 443 when absent; any other port only when declared in
#                   data.perfloop.ports[host].
#   * path        : must start with "/", only RFC 3986 pchar characters minus
#                   ";"; percent-escapes must be well formed; encoded "/" or
#                   "\" (%2F %5C), encoded "%" (%25, i.e. double encoding),
#                   encoded control or non-ASCII bytes => deny. Remaining
#                   escapes are decoded. Empty segments ("//" and trailing
#                   "/") are dropped. "." and ".." segments, raw or encoded
#                   => deny (never resolved).
#   * query       : same character / escape rules; split on "&" and ";";
#                   "+" is a space in keys and values.
#   * headers     : names compared lower-cased whatever the proxy sent.
package perfloop.egress

import rego.v1

# ---------------------------------------------------------------- constants

allowed_methods := {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

read_methods := {"GET", "HEAD"}

method_override_headers := {"x-http-method-override", "x-http-method", "x-method-override"}

# Headers some front ends use to rewrite the path after policy checks.
path_override_headers := {"x-original-url", "x-rewrite-url", "x-override-url"}

# Credentials are attached by the proxy after the decision; the sandbox and
# the connectors hold none, so a request that brings its own is refused.
credential_headers := {
	"authorization",
	"proxy-authorization",
	"cookie",
	"x-api-key",
	"dd-api-key",
	"dd-application-key",
	"private-token",
	"job-token",
	"x-goog-api-key",
	"x-workos-api-key",
}

credential_free_sources := {"sandbox", "connector-metrics", "connector-traces", "connector-logs", "connector-profiles"}

method_override_query_keys := {"_method", "x-http-method-override", "x-http-method", "x-method-override"}

# Decoding table: %XX for printable ASCII except "%", "/" and "\" (those are
# rejected before decoding, so decoding can never create a new escape).
pct_table := {
	"%20": " ", "%21": "!", "%22": "\"", "%23": "#", "%24": "$", "%26": "&", "%27": "'", "%28": "(",
	"%29": ")", "%2A": "*", "%2a": "*", "%2B": "+", "%2b": "+", "%2C": ",", "%2c": ",", "%2D": "-",
	"%2d": "-", "%2E": ".", "%2e": ".", "%30": "0", "%31": "1", "%32": "2", "%33": "3", "%34": "4",
	"%35": "5", "%36": "6", "%37": "7", "%38": "8", "%39": "9", "%3A": ":", "%3a": ":", "%3B": ";",
	"%3b": ";", "%3C": "<", "%3c": "<", "%3D": "=", "%3d": "=", "%3E": ">", "%3e": ">", "%3F": "?",
	"%3f": "?", "%40": "@", "%41": "A", "%42": "B", "%43": "C", "%44": "D", "%45": "E", "%46": "F",
	"%47": "G", "%48": "H", "%49": "I", "%4A": "J", "%4a": "J", "%4B": "K", "%4b": "K", "%4C": "L",
	"%4c": "L", "%4D": "M", "%4d": "M", "%4E": "N", "%4e": "N", "%4F": "O", "%4f": "O", "%50": "P",
	"%51": "Q", "%52": "R", "%53": "S", "%54": "T", "%55": "U", "%56": "V", "%57": "W", "%58": "X",
	"%59": "Y", "%5A": "Z", "%5a": "Z", "%5B": "[", "%5b": "[", "%5D": "]", "%5d": "]", "%5E": "^",
	"%5e": "^", "%5F": "_", "%5f": "_", "%60": "`", "%61": "a", "%62": "b", "%63": "c", "%64": "d",
	"%65": "e", "%66": "f", "%67": "g", "%68": "h", "%69": "i", "%6A": "j", "%6a": "j", "%6B": "k",
	"%6b": "k", "%6C": "l", "%6c": "l", "%6D": "m", "%6d": "m", "%6E": "n", "%6e": "n", "%6F": "o",
	"%6f": "o", "%70": "p", "%71": "q", "%72": "r", "%73": "s", "%74": "t", "%75": "u", "%76": "v",
	"%77": "w", "%78": "x", "%79": "y", "%7A": "z", "%7a": "z", "%7B": "{", "%7b": "{", "%7C": "|",
	"%7c": "|", "%7D": "}", "%7d": "}", "%7E": "~", "%7e": "~",
}

# Characters allowed raw in a path: RFC 3986 pchar (unreserved, sub-delims
# without ";", ":" and "@"), "%" for escapes and "/" as separator.
path_bad_char_re := `[^A-Za-z0-9._~!$&'()*+,=:@%/-]`

# Same for the query, plus "?", "/" and ";" (";" is treated as a separator).
query_bad_char_re := `[^A-Za-z0-9._~!$&'()*+,;=:@%/?-]`

escape_re := `%[0-9A-Fa-f]{2}`

encoded_separator_re := `%(2[Ff]|5[Cc])`

double_encoding_re := `%25`

# Control bytes (%00-%1F, %7F) and every byte >= %80 (non-ASCII).
encoded_unsafe_re := `%([01][0-9A-Fa-f]|7[Ff]|[89A-Fa-f][0-9A-Fa-f])`

hostname_re := `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`

# ---------------------------------------------------------------- helpers

str(x) := x if is_string(x)

str(x) := json.marshal(x) if not is_string(x)

# Only segments that contain "%" go through the (costly) table.
# Field of an object, null when absent or when o is not an object. Deny
# messages only interpolate values that are always defined: a message that
# cannot be built would make its deny rule silently disappear.
oget(o, k) := object.get(o, k, null) if is_object(o)

oget(o, k) := null if not is_object(o)

pct_decode(s) := s if indexof(s, "%") < 0

pct_decode(s) := strings.replace_n(pct_table, s) if indexof(s, "%") >= 0

# Query components: "+" means space, then the same decoding as paths.
query_decode(s) := pct_decode(replace(s, "+", " "))

# trim_space/trim/upper would change how regopy represents the string (see
# README, engine notes), so whitespace is stripped with a regex instead.
strip_space(s) := regex.replace(s, `^\s+|\s+$`, "")

# True when s has a "%" that does not start a two-hex-digit escape.
malformed_escape(s) if contains(regex.replace(s, escape_re, ""), "%")

# ---------------------------------------------------------------- source

source := input.source if is_string(input.source)

# ---------------------------------------------------------------- method

method := upper(input.method) if {
	is_string(input.method)
	regex.match(`^[A-Za-z]+$`, input.method)
}

is_read if method in read_methods

is_write if {
	method in allowed_methods
	not method in read_methods
}

# ---------------------------------------------------------------- scheme

scheme := lower(input.scheme) if is_string(input.scheme)

# ---------------------------------------------------------------- headers

header_names contains lower(k) if {
	is_object(input.headers)
	some k, _ in input.headers
	is_string(k)
}

# All values of a header, whatever case the proxy used for its name; a value
# may be a string or an array of strings.
header_values(name) := [v |
	is_object(input.headers)
	some k
	raw := input.headers[k]
	is_string(k)
	lower(k) == name
	some v in header_value_list(raw)
]

header_value_list(raw) := [raw] if is_string(raw)

header_value_list(raw) := raw if is_array(raw)

header_value_list(raw) := [str(raw)] if {
	not is_string(raw)
	not is_array(raw)
}

# ---------------------------------------------------------------- host / port

# The host field may carry ":port" (but never an IPv6 literal, see below).
_host_field := lower(input.host) if is_string(input.host)

_host_field_has_port if regex.match(`^[^:\[\]]+:[1-9][0-9]{0,4}$`, _host_field)

_host_no_port := _host_field if not contains(_host_field, ":")

_host_no_port := split(_host_field, ":")[0] if _host_field_has_port

_port_in_host_field := to_number(split(_host_field, ":")[1]) if _host_field_has_port

# One trailing dot is the fully-qualified form of the same name.
_host_candidate := trim_suffix(_host_no_port, ".")

host_is_ip_literal if contains(_host_field, "[")

host_is_ip_literal if {
	contains(_host_field, ":")
	not _host_field_has_port
}

# WHATWG URL rule: a host whose last label is numeric (decimal, or 0x-hex)
# is an IPv4 address (127.0.0.1, 2130706433, 0177.0.0.1, 0x7f.1, ...).
host_is_ip_literal if {
	labels := split(_host_candidate, ".")
	last := labels[count(labels) - 1]
	regex.match(`^(0x[0-9a-f]*|[0-9]+)$`, last)
}

host := _host_candidate if {
	regex.match(hostname_re, _host_candidate)
	not host_is_ip_literal
}

explicit_port := input.port if is_number(input.port)

_port_candidates contains explicit_port

_port_candidates contains _port_in_host_field

port := p if {
	count(_port_candidates) == 1
	some p in _port_candidates
}

port := 443 if {
	count(_port_candidates) == 0
	scheme == "https"
}

port_valid if {
	floor(port) == port
	port >= 1
	port <= 65535
}

port_declared if port == 443

port_declared if port in data.perfloop.ports[host]

# ---------------------------------------------------------------- path

raw_path := input.path if is_string(input.path)

_path_parts := split(raw_path, "/") if startswith(raw_path, "/")

raw_segments := [s | some s in _path_parts; s != ""]

segments := [pct_decode(s) | some s in raw_segments]

path := "/" if count(segments) == 0

path := concat("", ["/", concat("/", segments)]) if count(segments) > 0

# Canonical form the proxy must forward: empty segments removed, every
# segment byte-identical to what was received.
forward_path := "/" if count(raw_segments) == 0

forward_path := concat("", ["/", concat("/", raw_segments)]) if count(raw_segments) > 0

# GitLab names projects by their URL-encoded full path ("group%2Fproject");
# that single segment of the GitLab REST API is the only place an encoded "/"
# is accepted (see codehost_other.rego).
encoded_separator_exempt(i) if {
	gitlab_api
	i == 3
	count(raw_segments) >= 4
	raw_segments[0] == "api"
	raw_segments[1] == "v4"
	raw_segments[2] == "projects"
}

# ---------------------------------------------------------------- query

raw_query := "" if not is_string(input.query)

raw_query := trim_prefix(input.query, "?") if is_string(input.query)

_query_split := regex.split(`[&;]`, raw_query)

_query_parts := [p | some p in _query_split; p != ""]

query_pairs := [[query_decode(kv[0]), query_decode(kv[1])] |
	some p in _query_parts
	kv := split_kv(p)
]

split_kv(p) := [substring(p, 0, i), substring(p, i + 1, -1)] if {
	i := indexof(p, "=")
	i >= 0
}

split_kv(p) := [p, ""] if indexof(p, "=") < 0

query_values(k) := [v | some pair in query_pairs; pair[0] == k; v := pair[1]]

# A query parameter that occurs exactly once (duplicates are ambiguous and
# leave it undefined, which fails every rule that needs it).
qparam(k) := vs[0] if {
	vs := query_values(k)
	count(vs) == 1
}

# ---------------------------------------------------------------- body

body := input.body if is_object(input.body)

body := {} if not is_object(input.body)

# ---------------------------------------------------------------- exported view

# The normalised request. The proxy must forward host, port and forward_path
# (never the raw path) once the decision allows it.
# Fields that could not be normalised are null (and the request is denied).
normalized := {
	"method": _n_method,
	"scheme": _n_scheme,
	"host": _n_host,
	"port": _n_port,
	"path": _n_path,
	"forward_path": _n_forward_path,
	"query": query_pairs,
}

default _n_method := null

_n_method := method

default _n_scheme := null

_n_scheme := scheme

default _n_host := null

_n_host := host

default _n_port := null

_n_port := port

default _n_path := null

_n_path := path

default _n_forward_path := null

_n_forward_path := forward_path

# ---------------------------------------------------------------- denies

deny contains ["10", "input.source", concat("", ["source workload ", str(oget(input, "source")), " is not one of the known workloads"])] if {
	not source in known_sources
}

deny contains ["10", "normalize.method", concat("", ["method ", str(oget(input, "method")), " is not allowed (only GET, HEAD, POST, PUT, PATCH, DELETE)"])] if {
	not method in allowed_methods
}

deny contains ["10", "normalize.method_override", concat("", ["method-override header ", name, " is never allowed; the request would be judged as a different method than the upstream executes"])] if {
	some name in header_names
	name in method_override_headers
}

deny contains ["10", "normalize.method_override", concat("", ["method-override query parameter ", pair[0], " is never allowed"])] if {
	some pair in query_pairs
	lower(strip_space(pair[0])) in method_override_query_keys
}

deny contains ["10", "normalize.credential_header", concat("", ["header ", name, " carries a credential; credentials are attached only by the proxy"])] if {
	source in credential_free_sources
	some name in header_names
	name in credential_headers
}

deny contains ["10", "normalize.path_override", concat("", ["path-rewriting header ", name, " is never allowed"])] if {
	some name in header_names
	name in path_override_headers
}

deny contains ["10", "normalize.scheme", concat("", ["scheme ", str(oget(input, "scheme")), " is not allowed; only https leaves the sandbox network"])] if {
	not scheme == "https"
}

deny contains ["10", "normalize.host_ip_literal", concat("", ["host ", str(oget(input, "host")), " is an IP literal; destinations must be named hosts"])] if {
	host_is_ip_literal
}

deny contains ["10", "normalize.host_invalid", concat("", ["host ", str(oget(input, "host")), " is not a valid fully-qualified DNS name"])] if {
	not host_is_ip_literal
	not host
	not is_never_host(_host_candidate)
}

deny contains ["10", "normalize.host_header", "Host header does not match the request host (domain fronting)"] if {
	host
	some v in header_values("host")
	not host_header_matches(lower(str(v)))
}

host_header_matches(v) if trim_suffix(v, ".") == host

host_header_matches(v) if v == concat("", [host, ":", str(port)])

host_header_matches(v) if v == concat("", [host, ".:", str(port)])

deny contains ["10", "normalize.port", concat("", ["port ", str(oget(input, "port")), " is not a valid TCP port"])] if {
	input.port != null
	not is_number(input.port)
}

deny contains ["10", "normalize.port", "port given twice with different values"] if {
	count(_port_candidates) > 1
}

deny contains ["10", "normalize.port", concat("", ["port ", str(port), " is not a valid TCP port"])] if {
	port
	not port_valid
}

deny contains ["10", "normalize.port", concat("", ["port ", str(port), " is not declared for host ", _d_host, " (only 443 unless declared in data.perfloop.ports)"])] if {
	port_valid
	not port_declared
}

deny contains ["10", "normalize.path", "path must be a string starting with \"/\" (origin-form)"] if {
	not startswith(raw_path, "/")
}

deny contains ["10", "normalize.path_chars", "path contains characters outside RFC 3986 pchar (e.g. space, backslash, \";\", \"?\", \"#\", control or non-ASCII)"] if {
	regex.match(path_bad_char_re, raw_path)
}

deny contains ["10", "normalize.path_encoding", "path contains a malformed percent-escape"] if {
	malformed_escape(raw_path)
}

deny contains ["10", "normalize.encoded_separator", concat("", ["path segment ", seg, " contains an encoded \"/\" or \"\\\" (%2F/%5C); ambiguous, rejected"])] if {
	some i, seg in raw_segments
	regex.match(encoded_separator_re, seg)
	not encoded_separator_exempt(i)
}

deny contains ["10", "normalize.double_encoding", "path contains %25 (an encoded \"%\"): double encoding is ambiguous, rejected"] if {
	regex.match(double_encoding_re, raw_path)
}

deny contains ["10", "normalize.path_encoding", "path encodes a control or non-ASCII byte"] if {
	regex.match(encoded_unsafe_re, raw_path)
}

deny contains ["10", "normalize.dot_segment", concat("", ["path contains a dot segment ", raw_segments[i], " (raw or percent-encoded); dot segments are rejected, never resolved"])] if {
	some i, seg in segments
	seg in {".", ".."}
}

deny contains ["10", "normalize.query", concat("", ["query must be a string or null, got ", str(oget(input, "query"))])] if {
	input.query != null
	not is_string(input.query)
}

deny contains ["10", "normalize.query_chars", "query contains characters outside RFC 3986 query characters"] if {
	regex.match(query_bad_char_re, raw_query)
}

deny contains ["10", "normalize.query_encoding", "query contains a malformed percent-escape"] if {
	malformed_escape(raw_query)
}

deny contains ["10", "normalize.double_encoding", "query contains %25 (an encoded \"%\"): double encoding is ambiguous, rejected"] if {
	regex.match(double_encoding_re, raw_query)
}

deny contains ["10", "normalize.query_encoding", "query encodes a control or non-ASCII byte"] if {
	regex.match(encoded_unsafe_re, raw_query)
}

deny contains ["10", "normalize.headers", "headers must be an object of name -> value(s)"] if {
	input.headers != null
	not is_object(input.headers)
}

deny contains ["10", "normalize.body", "body must be a JSON object or null"] if {
	input.body != null
	not is_object(input.body)
	not is_array(input.body)
}

deny contains ["10", "normalize.body", "JSON array bodies (batched requests) are not allowed"] if {
	is_array(input.body)
}
