"""Render and apply the product database migrations kept in ``platform/sql/``.

The migration Job renders them into a ConfigMap with :func:`render_migrations` and applies them with
:func:`apply_migrations`; the database tests do the same against a real server. Importing this
module needs only jinja2: the psycopg connection is passed in by the caller.

Every migration is idempotent and every run applies all of them, in order, in one transaction. The
ledger ``perfloop_admin.schema_migrations`` records the SHA-256 of each migration's *source* (the
template, for ``*.sql.j2``) when it is first applied; a later run refuses to start if an applied
migration's source has changed or disappeared, because re-running an edited migration cannot undo
what its previous version did (a removed GRANT stays granted). Stack values such as the IAM users
are data, not logic: they may change between runs without changing any checksum.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

if TYPE_CHECKING:
    import psycopg

SQL_DIR = Path(__file__).resolve().parent.parent / "platform" / "sql"

# The workload database roles that Cloud SQL IAM users may be granted (created by 001_roles.sql).
WORKLOAD_ROLES = (
    "control_plane",
    "session_controller",
    "agent_orchestrator",
    "connector",
    "audit_cleanup",
    "migrator",
)

# A Cloud SQL IAM database user for a service account is the SA email without
# ".gserviceaccount.com": account id and project id are each 6-30 characters of lowercase letters,
# digits and hyphens, starting with a letter and not ending with a hyphen.
IAM_USER_PATTERN = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam")
# PostgreSQL silently truncates longer identifiers, which would create a role Cloud SQL never logs in as.
MAX_IDENTIFIER_BYTES = 63

# SQLSTATEs raised by the migrations' functions (documented in platform/sql/README.md).
RETENTION_FLOOR_SQLSTATE = "PF001"  # audit.purge_events() asked for less than the retention floor
APPEND_ONLY_SQLSTATE = "PF002"  # UPDATE, DELETE or TRUNCATE on audit.events outside the purge

_SOURCE_NAME = re.compile(r"[0-9]{3}_[a-z0-9_]+\.sql(?:\.j2)?")
_HEADER = "-- perfloop-migration source-sha256={}\n"
_HEADER_PATTERN = re.compile(r"-- perfloop-migration source-sha256=([0-9a-f]{64})\n")
# Serialises concurrent runs (two Job pods, or a Job and an operator) on the ledger.
_ADVISORY_LOCK_KEY = 0x7066_6D69_6772  # "pfmigr"


class MigrationChecksumError(RuntimeError):
    """An applied migration's source changed or disappeared since it was applied."""


def _sql_literal(value: str) -> str:
    # standard_conforming_strings is on (the default since PostgreSQL 9.1): doubling quotes suffices.
    return "'" + value.replace("'", "''") + "'"


def _validated_memberships(iam_users: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    if not isinstance(iam_users, Mapping):
        raise ValueError(f"iam_users must be a mapping of group role to IAM users, got {type(iam_users).__name__}")
    group_of: dict[str, str] = {}
    for group_role, members in iam_users.items():
        if group_role not in WORKLOAD_ROLES:
            raise ValueError(f"iam_users key {group_role!r} is not a workload role; expected one of {WORKLOAD_ROLES}")
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise ValueError(f"iam_users[{group_role!r}] must be a list of IAM user names, got {type(members).__name__}")
        for member in members:
            if not isinstance(member, str) or not IAM_USER_PATTERN.fullmatch(member):
                raise ValueError(
                    f"iam_users[{group_role!r}] has {member!r}, which is not a Cloud SQL IAM service-account user "
                    "(the service account email without '.gserviceaccount.com', e.g. 'pf-control-plane@acme-prod.iam')"
                )
            if len(member.encode()) > MAX_IDENTIFIER_BYTES:
                raise ValueError(
                    f"iam_users[{group_role!r}] has {member!r}, "
                    f"longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte role names"
                )
            # One service account per workload: a user in two groups would hold the union of their
            # privileges (e.g. audit_cleanup that can also read audit rows).
            if group_of.setdefault(member, group_role) != group_role:
                raise ValueError(f"iam_users[{group_role!r}] has {member!r}, already listed under {group_of[member]!r}")
    return sorted((group_role, member) for member, group_role in group_of.items())


def _migration_sources() -> list[Path]:
    paths = sorted(p for p in SQL_DIR.iterdir() if p.name.endswith((".sql", ".sql.j2")))
    misnamed = [p.name for p in paths if not _SOURCE_NAME.fullmatch(p.name)]
    if misnamed:
        raise ValueError(f"migrations in {SQL_DIR} must be named NNN_name.sql or NNN_name.sql.j2: {misnamed}")
    numbers = [p.name[:3] for p in paths]
    duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicated:
        raise ValueError(f"migration numbers used more than once in {SQL_DIR}: {duplicated}")
    return paths


def render_migrations(iam_users: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """Return ``(filename, sql)`` for every migration, in order, with templates rendered.

    ``iam_users`` maps workload group roles (:data:`WORKLOAD_ROLES`) to the Cloud SQL IAM users of
    their service accounts. Templates ``NNN_name.sql.j2`` come back as ``NNN_name.sql``. Each SQL
    text starts with a header carrying the checksum of its source, which :func:`apply_migrations`
    records, so that the rendered text alone (e.g. from a ConfigMap) is enough to apply it.

    Raises ``ValueError`` naming the offending key or value if ``iam_users`` is invalid.
    """
    memberships = _validated_memberships(iam_users)
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    environment.filters["sql_literal"] = _sql_literal
    migrations = []
    for path in _migration_sources():
        source = path.read_text(encoding="utf-8")
        checksum = hashlib.sha256(source.encode()).hexdigest()
        if path.name.endswith(".j2"):
            name, text = path.name.removesuffix(".j2"), environment.from_string(source).render(memberships=memberships)
        else:
            name, text = path.name, source
        migrations.append((name, _HEADER.format(checksum) + text))
    return migrations


def migrations_checksum(migrations: Sequence[tuple[str, str]]) -> str:
    """SHA-256 of rendered migrations, names included: changes whenever anything a run applies changes
    (a source or a stack value), e.g. to name the migration Job after its content."""
    digest = hashlib.sha256()
    for name, text in migrations:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def _source_checksum(name: str, text: str) -> str:
    header = _HEADER_PATTERN.match(text)
    if header is None:
        raise ValueError(f"migration {name} has no source checksum header: render it with render_migrations()")
    return header.group(1)


def apply_migrations(conn: psycopg.Connection, migrations: Sequence[tuple[str, str]]) -> list[str]:
    """Apply rendered migrations in order, in one transaction; return the ones applied for the first time.

    ``conn`` is a psycopg 3 connection, not in a transaction, logged in as the migration runner: a
    role with CREATEROLE that may grant on the current database (on Cloud SQL, a member of
    ``cloudsqlsuperuser``); it need not be a superuser. ``001_roles.sql`` makes it a member of
    ``migrator`` and so of ``perfloop_owner``.

    Raises :class:`MigrationChecksumError` before applying anything if a migration recorded in
    ``perfloop_admin.schema_migrations`` changed or is missing from ``migrations``.
    """
    checksums = {name: _source_checksum(name, text) for name, text in migrations}
    if len(checksums) != len(migrations):
        raise ValueError("migration filenames must be unique")
    with conn.transaction():
        # Migrations schema-qualify what they create; a fixed search_path keeps unqualified
        # built-ins from resolving to anything else whatever the runner's settings are.
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        # Fail (and let the Job retry) rather than queue behind a long transaction while every
        # later query on the same table queues behind us.
        conn.execute("SET LOCAL lock_timeout = '10s'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        ledger_exists = conn.execute("SELECT to_regclass('perfloop_admin.schema_migrations') IS NOT NULL").fetchone()[0]
        applied = (
            dict(conn.execute("SELECT filename, checksum FROM perfloop_admin.schema_migrations").fetchall())
            if ledger_exists
            else {}
        )
        changed = sorted(name for name, checksum in applied.items() if checksums.get(name, checksum) != checksum)
        missing = sorted(set(applied) - set(checksums))
        if changed or missing:
            raise MigrationChecksumError(
                f"applied migrations changed {changed} or missing {missing}: an applied migration is "
                "immutable; restore it and put the change in a new migration"
            )
        for name, text in migrations:
            conn.execute(text)
            # Migrations SET LOCAL ROLE perfloop_owner; each one starts as the runner.
            conn.execute("RESET ROLE")
        new = [name for name, _ in migrations if name not in applied]
        for name in new:
            conn.execute(
                "INSERT INTO perfloop_admin.schema_migrations (filename, checksum) VALUES (%s, %s)",
                (name, checksums[name]),
            )
    return new
