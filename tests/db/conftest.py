"""Fixtures for the database suite.

One PostgreSQL server per test session, configured like the product database: TLS only (pg_hba.conf
has only ``hostssl`` rules for TCP), with a self-signed certificate made at test time. The bootstrap
superuser reaches it over a unix socket in the server's private directory, to set the stage the way
Cloud SQL does: ``cloudsqlsuperuser`` (CREATEROLE, not SUPERUSER) owns the databases, and the
workloads' IAM users exist before the migrations run. The migrations are applied as the migrator's
IAM user, a non-superuser member of ``cloudsqlsuperuser``, exactly as the migration Job does.

Each test module gets a fresh database (``db``); tests that purge or weaken the schema get their own
(``make_db``). Roles are cluster-wide, so every database shares them.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql

from infra.sql_migrations import WORKLOAD_ROLES, apply_migrations, render_migrations

MIN_SERVER_MAJOR = 15
PROJECT = "perfloop-test"
IAM_USERS = {role: [f"pf-{role.replace('_', '-')}@{PROJECT}.iam"] for role in WORKLOAD_ROLES}
RUNNER = IAM_USERS["migrator"][0]
SUPERUSER = "bootstrap"
# Cloud SQL's administrative role: CREATEROLE and CREATEDB, but not SUPERUSER.
CLOUDSQL_ADMIN_ROLE = "cloudsqlsuperuser"
# A role with no grants and no memberships: what PUBLIC alone may do.
OUTSIDER = "pf_outsider"

HBA = f"""\
# The bootstrap superuser of the test harness, over the unix socket in the server's private directory.
local all {SUPERUSER} trust
# Everyone else: TCP with TLS and a SCRAM password. There is no "host" or "hostnossl" rule, so a
# plaintext TCP connection matches no rule and is refused.
hostssl all all 127.0.0.1/32 scram-sha-256
"""

Mutation = tuple[str, str, str]  # (migration filename, text to replace exactly once, replacement)


def _server_major(bindir: Path) -> int:
    output = subprocess.run([bindir / "postgres", "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"\) (\d+)", output).group(1))


def _find_bindir() -> Path:
    """The directory of the newest PostgreSQL >= 15 server (initdb and postgres), or fail/skip the suite."""
    candidates = []
    if pg_config := shutil.which("pg_config"):
        if bindir := subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip():
            candidates.append(Path(bindir))
    candidates += Path("/usr/lib/postgresql").glob("*/bin")  # Debian: one directory per major version
    servers = [
        (major, bindir)
        for bindir in candidates
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file()
        and (major := _server_major(bindir)) >= MIN_SERVER_MAJOR
    ]
    if servers:
        return max(servers, key=lambda server: server[0])[1]
    message = (
        f"no PostgreSQL >= {MIN_SERVER_MAJOR} server binaries (initdb, postgres) found via pg_config "
        "or /usr/lib/postgresql/*/bin"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install the server: apt-get install postgresql", pytrace=False)
    pytest.skip(f"{message}; install them with: apt-get install postgresql")


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root, since initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")  # created by Debian's postgresql packages
    except KeyError:
        account = pwd.getpwnam("nobody")
    return account.pw_uid, account.pw_gid


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_self_signed_certificate(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "perfloop-test-db")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        # Clients connect to 127.0.0.1 with sslmode=verify-full, which checks this name.
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)  # the server refuses a key readable by others


class Database:
    """A database with the migrations applied, and one cached autocommit connection per login."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self._connections: dict[str, psycopg.Connection] = {}
        self.initially_applied: list[str] = []  # what the first migration run reported as new

    @staticmethod
    def login(who: str) -> str:
        """The login name for ``who``: a workload role's IAM user, or ``who`` itself."""
        return IAM_USERS[who][0] if who in IAM_USERS else who

    def conn(self, who: str) -> psycopg.Connection:
        """Connection as ``who``: "superuser" (over the unix socket), a workload role or a login name."""
        if who not in self._connections:
            self._connections[who] = (
                self.server.superuser(self.name) if who == "superuser" else self.server.connect(self.login(who), self.name)
            )
        return self._connections[who]

    def attempt(self, who: str, statement: str, params: Sequence[object] | None = None) -> str | None:
        """Run ``statement`` as ``who`` in a transaction that is rolled back; return the error's SQLSTATE,
        or None if it succeeded."""
        connection = self.conn(who)
        try:
            with connection.transaction(force_rollback=True):
                connection.execute(statement, params)
        except psycopg.Error as error:
            if error.sqlstate is None:  # not a refusal by the server: a broken test or connection
                raise
            return error.sqlstate
        return None

    def migrate(self, migrations: Sequence[tuple[str, str]]) -> list[str]:
        with self.server.connect(RUNNER, self.name, autocommit=False) as connection:
            return apply_migrations(connection, migrations)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


class Server:
    # The names tests need, reachable through the fixtures rather than by importing this conftest.
    iam_users = IAM_USERS
    runner = RUNNER
    outsider = OUTSIDER
    hba_rules = HBA

    def __init__(self, bindir: Path, base: Path) -> None:
        self.bindir = bindir
        self.base = base  # private to the server's account: data, socket, certificate, log
        self.data = base / "data"
        self.cert = base / "server.crt"
        self.key = base / "server.key"
        self.log = base / "server.log"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(24)
        self._account = _server_account()
        self._process: subprocess.Popen[bytes] | None = None
        self._database_numbers = itertools.count()

    def _as_server_account(self) -> dict[str, object]:
        if self._account is None:
            return {}
        uid, gid = self._account
        return {"user": uid, "group": gid, "extra_groups": [], "cwd": self.base}

    def start(self) -> None:
        _write_self_signed_certificate(self.cert, self.key)
        if self._account is not None:
            for path in (self.base, self.cert, self.key):
                os.chown(path, *self._account)
        subprocess.run(
            [self.bindir / "initdb", "-D", self.data, "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, **self._as_server_account(),
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.base}'\n"
                f"ssl = on\nssl_cert_file = '{self.cert}'\nssl_key_file = '{self.key}'\n"
                # A throwaway cluster: durability buys nothing and costs seconds.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        (self.data / "pg_hba.conf").write_text(HBA)
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [self.bindir / "postgres", "-D", self.data], stdout=log, stderr=subprocess.STDOUT,
                **self._as_server_account(),
            )
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._process.returncode}:\n{self.log.read_text()}")
            try:
                self.superuser("postgres").close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections within 30 s:\n{self.log.read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def superuser(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(host=str(self.base), port=self.port, user=SUPERUSER, dbname=dbname, autocommit=True)

    def connect(self, user: str, dbname: str, sslmode: str = "verify-full", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=user, password=self.password, dbname=dbname,
            sslmode=sslmode, sslrootcert=str(self.cert), autocommit=autocommit, connect_timeout=10,
        )

    def bootstrap_roles(self) -> None:
        """Set the stage as Cloud SQL does before the migration Job: the administrative role, and the
        workloads' IAM users (created by the Cloud SQL API), the migrator's being a member of it."""
        with self.superuser("postgres") as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN CREATEROLE CREATEDB").format(sql.Identifier(CLOUDSQL_ADMIN_ROLE)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(OUTSIDER)))
            for (member,) in IAM_USERS.values():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(member), sql.Literal(self.password))
                )
            conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(RUNNER)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(CLOUDSQL_ADMIN_ROLE), sql.Identifier(RUNNER)))

    def reload_hba(self, rules: str) -> None:
        """Replace pg_hba.conf and return once new connections are authenticated against it."""
        with self.superuser("postgres") as conn:
            loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
            (self.data / "pg_hba.conf").write_text(rules)
            conn.execute("SELECT pg_reload_conf()")
        # The postmaster stamps the reload time after re-reading its files; backends forked later
        # inherit the stamp and the new rules.
        deadline = time.monotonic() + 10
        while True:
            with self.superuser("postgres") as conn:
                if conn.execute("SELECT pg_conf_load_time()").fetchone()[0] > loaded:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pg_hba.conf was not reloaded within 10 s:\n{self.log.read_text()}")
            time.sleep(0.02)

    def create_database(
        self,
        mutations: Sequence[Mutation] = (),
        iam_users: Mapping[str, Sequence[str]] = IAM_USERS,
    ) -> Database:
        """A new database owned by cloudsqlsuperuser, with the migrations applied as the runner.

        Each mutation replaces text that must occur exactly once in the named rendered migration,
        to apply a deliberately weakened schema and prove that a check notices.
        """
        migrations = dict(render_migrations(iam_users))
        for filename, old, new in mutations:
            assert migrations[filename].count(old) == 1, f"mutation target not found exactly once in {filename}: {old!r}"
            migrations[filename] = migrations[filename].replace(old, new)
        name = f"perfloop_{next(self._database_numbers)}"
        with self.superuser("postgres") as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(CLOUDSQL_ADMIN_ROLE))
            )
        database = Database(self, name)
        database.initially_applied = database.migrate(list(migrations.items()))
        return database


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    bindir = _find_bindir()
    # Not pytest's tmp_path: that lives under a root-only directory the server's account (when we
    # are root) could not enter.
    base = Path(tempfile.mkdtemp(prefix="perfloop-pg-"))
    try:
        instance = Server(bindir, base)
        try:
            instance.start()
            instance.bootstrap_roles()
            yield instance
        finally:
            instance.stop()
    finally:
        shutil.rmtree(base)


@pytest.fixture(scope="module")
def db(server: Server) -> Iterator[Database]:
    """A database shared by the tests of one module: they must not depend on each other's rows."""
    database = server.create_database()
    yield database
    database.close()


@pytest.fixture
def make_db(server: Server) -> Iterator[Callable[..., Database]]:
    """Factory of databases of the test's own (``Server.create_database`` arguments), closed after it."""
    created: list[Database] = []

    def make(mutations: Sequence[Mutation] = (), iam_users: Mapping[str, Sequence[str]] = IAM_USERS) -> Database:
        created.append(server.create_database(mutations, iam_users))
        return created[-1]

    yield make
    for database in created:
        database.close()
