"""Evidence: the security page's promises as data (`policies/claims.yaml`), checked by policy
functions over a normalised, read-only view of a stack, and reported as a signed, reproducible
bundle (`perfloop-platform check` / `evidence`) or enforced at deploy time (`policies/pack/`).

- `view`: the normalised stack view, from an offline plan, a `pulumi stack export` or CrossGuard.
- `policies`: the check functions, one finding per resource path they rely on.
- `claims`: the claims catalogue and its evaluation.
- `ledger`: "the access you granted", per principal.
- `mutations`: the mutation suite that proves each claim's checks can fail.
- `bundle`, `oscal`: the evidence bundle and its OSCAL assessment results.
- `crossguard`: the same checks as a Pulumi CrossGuard policy pack.
- `cli`: the `check` and `evidence` subcommands (`register(subparsers)`).
"""
