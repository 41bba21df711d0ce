"""Cloud SQL for PostgreSQL: private, TLS-only, IAM-authenticated, protected from deletion.

"The product database has no public address and refuses unencrypted connections. Access is over
TLS from inside the private network only."
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_gcp import sql

from infra.config import DatabaseConfig
from infra.naming import iam_user_name

DATABASE_NAME = "perfloop"
# Strict default: every connection presents a client certificate, which the Cloud SQL connectors
# (Auth Proxy, language connectors) do with IAM authentication; direct connections are refused.
STRICT_SSL_MODE = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
# Named loosening `database-tls-without-client-certificates`: still TLS-only.
LOOSE_SSL_MODE = "ENCRYPTED_ONLY"


@dataclass(frozen=True)
class DatabaseArgs:
    project: str
    region: str
    network: pulumi.Input[str]
    private_services_range: pulumi.Input[str]
    settings: DatabaseConfig
    require_client_certificates: bool
    cmek_key: Optional[str]
    labels: dict[str, str]


class Database(pulumi.ComponentResource):
    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:Database", name, None, opts)
        s = args.settings
        self.instance = sql.DatabaseInstance(
            "instance",
            project=args.project,
            name=name,
            region=args.region,
            database_version=s.version,
            encryption_key_name=args.cmek_key,
            # Both guards: the provider refuses to delete, and so does the Cloud SQL API.
            deletion_protection=True,
            settings=sql.DatabaseInstanceSettingsArgs(
                tier=s.tier,
                edition=s.edition,
                availability_type="REGIONAL",
                disk_type="PD_SSD",
                disk_size=s.disk_size_gb,
                disk_autoresize=True,
                deletion_protection_enabled=True,
                ip_configuration=sql.DatabaseInstanceSettingsIpConfigurationArgs(
                    ipv4_enabled=False,
                    private_network=args.network,
                    allocated_ip_range=args.private_services_range,
                    authorized_networks=[],
                    enable_private_path_for_google_cloud_services=False,
                    ssl_mode=STRICT_SSL_MODE if args.require_client_certificates else LOOSE_SSL_MODE,
                ),
                connector_enforcement="REQUIRED" if args.require_client_certificates else "NOT_REQUIRED",
                backup_configuration=sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=True,
                    location=args.region,
                    start_time="02:00",
                    point_in_time_recovery_enabled=True,
                    transaction_log_retention_days=s.point_in_time_recovery_days,
                    backup_retention_settings=sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                        retained_backups=s.backup_retention_count, retention_unit="COUNT"
                    ),
                ),
                maintenance_window=sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
                    day=s.maintenance_window.day, hour=s.maintenance_window.hour, update_track="stable"
                ),
                # Query insights for operations, without recording who connected from where.
                insights_config=sql.DatabaseInstanceSettingsInsightsConfigArgs(
                    query_insights_enabled=True,
                    record_client_address=False,
                    record_application_tags=False,
                    query_string_length=1024,
                ),
                database_flags=[
                    sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="cloudsql.iam_authentication", value="on"),
                    sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="log_connections", value="on"),
                    sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="log_disconnections", value="on"),
                    # DDL is logged: the one path around the audit table's triggers (an owner
                    # member disabling them) leaves a record.
                    sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="log_statement", value="ddl"),
                ],
                user_labels=args.labels,
            ),
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.database = sql.Database(
            "database",
            project=args.project,
            name=DATABASE_NAME,
            instance=self.instance.name,
            # Dropping the stack must never drop the data; offboarding a workspace drops only its schema.
            deletion_policy="ABANDON",
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.register_outputs(
            {
                "instance": self.instance.name,
                "connection_name": self.instance.connection_name,
                "private_ip": self.instance.private_ip_address,
                "database": self.database.name,
            }
        )


@dataclass(frozen=True)
class DatabaseUsersArgs:
    project: str
    instance: pulumi.Input[str]
    # Google service account e-mail of each workload that logs in, by account ID.
    service_accounts: dict[str, pulumi.Input[str]]


class DatabaseUsers(pulumi.ComponentResource):
    """Cloud SQL IAM users: workloads log in with their Google identity, never a password."""

    def __init__(self, name: str, args: DatabaseUsersArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:DatabaseUsers", name, None, opts)
        self.users = {
            account_id: sql.User(
                account_id,
                project=args.project,
                instance=args.instance,
                type="CLOUD_IAM_SERVICE_ACCOUNT",
                name=pulumi.Output.from_input(email).apply(iam_user_name),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for account_id, email in sorted(args.service_accounts.items())
        }
        self.register_outputs({"users": [u.name for u in self.users.values()]})
