"""Entry point for the Pulumi language host (`main: infra/` in Pulumi.yaml)."""

from infra.program import main

main()
