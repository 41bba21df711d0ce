"""Audit logging at the GCP layer: Data Access logs on, kept at least 13 months in a locked bucket.

The security page's retention floor ("at least 13 months") holds twice: in the database (the purge
function refuses a shorter window) and here, where a locked bucket cannot have its retention
shortened or be deleted before its logs expire.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import logging, projects

# 13 months, rounded up: the floor the security page promises.
AUDIT_RETENTION_DAYS = 400
AUDIT_BUCKET = "perfloop-audit"
# Services that hold secrets or derived customer data.
DATA_ACCESS_AUDITED = (
    "aiplatform.googleapis.com",
    "container.googleapis.com",
    "secretmanager.googleapis.com",
    "sqladmin.googleapis.com",
)
AUDIT_LOG_FILTER = 'logName:"/logs/cloudaudit.googleapis.com%2F"'


@dataclass(frozen=True)
class AuditLoggingArgs:
    project: str
    region: str
    retention_days: int = AUDIT_RETENTION_DAYS


class AuditLogging(pulumi.ComponentResource):
    def __init__(self, name: str, args: AuditLoggingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:AuditLogging", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.audit_configs = [
            projects.IAMAuditConfig(
                f"data-access-{service.split('.')[0]}",
                project=args.project,
                service=service,
                audit_log_configs=[
                    projects.IAMAuditConfigAuditLogConfigArgs(log_type=t)
                    for t in ("ADMIN_READ", "DATA_READ", "DATA_WRITE")
                ],
                opts=child,
            )
            for service in DATA_ACCESS_AUDITED
        ]
        self.bucket = logging.ProjectBucketConfig(
            "audit-bucket",
            project=args.project,
            location=args.region,
            bucket_id=AUDIT_BUCKET,
            description="Perfloop audit logs; retention floor of 13 months, locked.",
            retention_days=args.retention_days,
            locked=True,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.sink = logging.ProjectSink(
            "audit-sink",
            project=args.project,
            name=f"{name}-audit",
            destination=self.bucket.name.apply(lambda n: f"logging.googleapis.com/{n}"),
            filter=AUDIT_LOG_FILTER,
            unique_writer_identity=True,
            opts=child,
        )
        self.register_outputs({"bucket": self.bucket.name, "retention_days": self.bucket.retention_days})
