"""Project services: exactly the APIs the stack uses, nothing more."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import projects

BASE_APIS = (
    "aiplatform.googleapis.com",  # Vertex AI, for the agent orchestrator alone
    "cloudresourcemanager.googleapis.com",  # project IAM bindings and audit config
    "compute.googleapis.com",
    "container.googleapis.com",
    "dns.googleapis.com",  # private zones that route Google APIs over Private Google Access
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # Workload Identity token exchange
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",  # private services access for Cloud SQL
    "sqladmin.googleapis.com",
    "sts.googleapis.com",  # Workload Identity token exchange
)


@dataclass(frozen=True)
class ProjectServicesArgs:
    project: str
    cmek: bool
    binary_authorization: bool


def required_apis(args: ProjectServicesArgs) -> tuple[str, ...]:
    extra = (("cloudkms.googleapis.com",) if args.cmek else ()) + (
        ("binaryauthorization.googleapis.com",) if args.binary_authorization else ()
    )
    return tuple(sorted(BASE_APIS + extra))


class ProjectServices(pulumi.ComponentResource):
    """Enables the stack's APIs. Destroying the stack leaves them enabled, so a teardown never
    disables an API something else in the customer's project relies on."""

    def __init__(self, name: str, args: ProjectServicesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:ProjectServices", name, None, opts)
        self.services = [
            projects.Service(
                api.split(".")[0],
                project=args.project,
                service=api,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in required_apis(args)
        ]
        self.register_outputs({"apis": [s.service for s in self.services]})
