"""The database refuses unencrypted connections and accepts TLS ones (verified against its certificate).

On Cloud SQL this is the instance's SSL mode (encrypted connections only); here it is pg_hba.conf
with only hostssl rules for TCP, configured by the session's server fixture.
"""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.db


def plaintext_refusal(db, who: str) -> str | None:
    """The server's refusal of a plaintext TCP connection as ``who``, or None if it was accepted. The
    credentials are the ones that succeed over TLS, so a refusal can only be about encryption."""
    try:
        db.server.connect(db.login(who), db.name, sslmode="disable").close()
    except psycopg.OperationalError as error:
        return str(error)
    return None


@pytest.mark.parametrize("who", ["control_plane", "connector", "migrator"])
def test_plaintext_connections_are_refused(db, who: str) -> None:
    refusal = plaintext_refusal(db, who)
    assert refusal is not None and "no pg_hba.conf entry" in refusal and "no encryption" in refusal


@pytest.mark.parametrize("who", ["control_plane", "connector", "migrator"])
def test_tls_connections_succeed(db, who: str) -> None:
    with db.server.connect(db.login(who), db.name, sslmode="verify-full") as conn:
        ssl, version = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert ssl and version in {"TLSv1.2", "TLSv1.3"}


def test_plaintext_check_notices_a_host_rule(db) -> None:
    server = db.server
    assert "\nhostssl " in server.hba_rules
    server.reload_hba(server.hba_rules.replace("\nhostssl ", "\nhost "))
    try:
        assert plaintext_refusal(db, "connector") is None
    finally:
        server.reload_hba(server.hba_rules)
    assert plaintext_refusal(db, "connector") is not None
