# GitLab and Bitbucket Cloud: read-only, deny by default.
#
# GitLab (gitlab.com or a self-managed host from data):
#   GET/HEAD /api/v4/projects/<url-encoded full path>[/...]  (the one place an
#   encoded "/" is accepted), git smart-HTTP fetch on
#   /<group>/<...>/<project>.git/{info/refs?service=git-upload-pack,git-upload-pack}.
# Bitbucket Cloud (api.bitbucket.org / bitbucket.org):
#   GET/HEAD /2.0/repositories/<workspace>/<slug>[/...], git smart-HTTP fetch.
# Writes of any kind are not modelled for these providers and are denied.
package perfloop.egress

import rego.v1

gitlab_api if {
	code_host.provider == "gitlab"
	host == code_host.api_host
}

gitlab_git if {
	code_host.provider == "gitlab"
	host == code_host.git_host
}

bitbucket_api if {
	code_host.provider == "bitbucket"
	host == code_host.api_host
}

bitbucket_git if {
	code_host.provider == "bitbucket"
	host == code_host.git_host
}

gitlab_project := lower(replace(replace(segments[3], "%2F", "/"), "%2f", "/")) if {
	gitlab_api
	count(segments) >= 4
	array.slice(segments, 0, 3) == ["api", "v4", "projects"]
}

allow_match contains ["gitlab.read", concat("", ["read of granted GitLab project ", gitlab_project])] if {
	source == "sandbox"
	is_read
	repo_granted(gitlab_project)
}

bitbucket_repo := lower(concat("/", [segments[2], segments[3]])) if {
	bitbucket_api
	count(segments) >= 4
	array.slice(segments, 0, 2) == ["2.0", "repositories"]
}

allow_match contains ["bitbucket.read", concat("", ["read of granted Bitbucket repository ", bitbucket_repo])] if {
	source == "sandbox"
	is_read
	repo_granted(bitbucket_repo)
}

# git smart-HTTP fetch: /<namespace...>/<repo>.git/<endpoint>
other_git_host if gitlab_git

other_git_host if bitbucket_git

_other_git_idx := idx if {
	other_git_host
	idx := [i | s := segments[i]; endswith(s, ".git"); i >= 1]
}

# Exactly one "<repo>.git" segment, not the first one.
other_git_split := [i, array.slice(segments, i + 1, count(segments))] if {
	count(_other_git_idx) == 1
	i := _other_git_idx[0]
}

other_git_repo := lower(concat("/", array.concat(array.slice(segments, 0, other_git_split[0]), [trim_suffix(segments[other_git_split[0]], ".git")]))) if other_git_split

other_git_rest := other_git_split[1]

allow_match contains ["git.upload_pack", concat("", ["fetch from granted repository ", other_git_repo])] if {
	source == "sandbox"
	method == "GET"
	other_git_rest == ["info", "refs"]
	qparam("service") == "git-upload-pack"
	repo_granted(other_git_repo)
}

allow_match contains ["git.upload_pack", concat("", ["fetch from granted repository ", other_git_repo])] if {
	source == "sandbox"
	method == "POST"
	other_git_rest == ["git-upload-pack"]
	repo_granted(other_git_repo)
}

other_code_host if gitlab_api

other_code_host if gitlab_git

other_code_host if bitbucket_api

other_code_host if bitbucket_git

deny contains ["40", "codehost.write_not_supported", concat("", ["writes to ", host, " (", code_host.provider, ") are not modelled; only reads are allowed"])] if {
	source == "sandbox"
	other_code_host
	is_write
	not other_git_rest == ["git-upload-pack"]
}

deny contains ["40", "codehost.write_not_supported", concat("", ["git push to ", host, " is not modelled; only fetch is allowed"])] if {
	source == "sandbox"
	other_code_host
	qparam("service") == "git-receive-pack"
}

deny contains ["40", "github.repo_not_granted", concat("", ["repository ", r, " is not in the session grant"])] if {
	source == "sandbox"
	some r in {x | x := gitlab_project} | {x | x := bitbucket_repo} | {x | x := other_git_repo}
	not repo_granted(r)
}
