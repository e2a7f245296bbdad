"""``[journal]``: choosing PostgreSQL, validating its keys, finding its password, hiding it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentcron.config import JournalConfig, parse_config, redact_url
from agentcron.errors import ConfigError
from agentcron.journal.postgres.password import load_journal_password


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``agentcrond --check-config`` on a config file holding ``text``."""
    config = tmp_path / "check.toml"
    config.write_text(text)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from agentcron.daemon import main; raise SystemExit(main())",
            "--config",
            str(config),
            "--check-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"},
    )


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, environ={"HOME": "/home/u"})
    return caught.value.problems


def test_without_a_journal_table_the_sqlite_file_is_the_journal() -> None:
    config = parse_config({}, environ={"HOME": "/home/u"})
    assert config.journal == JournalConfig()
    assert config.journal.location is None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://agentcron@db.internal:5432/agentcron",
        "postgresql:///agentcron?host=/run/postgresql",
        "postgres://u@/agentcron?host=/run/postgresql&sslmode=disable",
    ],
)
def test_postgresql_urls_are_accepted(url: str) -> None:
    config = parse_config({"journal": {"url": url}}, environ={})
    assert config.journal.url == url


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param(
            {"url": "mysql://u:pw@h/db"},
            "journal.url: must be a PostgreSQL URL (postgresql://user@host/db or "
            "postgresql:///db?host=/run/postgresql), got 'mysql://u:***@h/db'",
            id="other-scheme-password-hidden",
        ),
        pytest.param(
            {"url": "postgresql://u@h"},
            "journal.url: must name the database (postgresql://.../DBNAME), got 'postgresql://u@h'",
            id="no-database",
        ),
        pytest.param({"url": 5}, "journal.url: expected a string, got int", id="not-a-string"),
        pytest.param(
            {"password_file": "/etc/pw"},
            "journal.password_file: is only used with journal.url (a PostgreSQL journal)",
            id="password-without-url",
        ),
        pytest.param({"flavour": "x"}, "journal.flavour: unknown key", id="unknown-key"),
    ],
)
def test_bad_journal_keys_are_named(table: dict[str, Any], expected: str) -> None:
    assert problems_of({"journal": table}) == [expected]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h1,h2/db", "postgresql://u:***@h1,h2/db"),
        ("postgresql://u@h/db?password=secret&sslmode=require", None),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        ("postgresql://u@/db?host=/run/postgresql", "postgresql://u@/db?host=/run/postgresql"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str | None) -> None:
    redacted = redact_url(url)
    assert "secret" not in redacted
    assert "p%40ss" not in redacted
    if shown is not None:
        assert redacted == shown
    else:
        assert redacted == "postgresql://u@h/db?password=***&sslmode=require"


# --- the password ------------------------------------------------------------------------------


def test_the_password_file_wins_and_keeps_all_but_the_line_break(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(" spaced out \n")
    (tmp_path / "journal-password").write_text("from-credential")
    config = JournalConfig(url="postgresql:///db", password_file=password_file)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_journal_password(config, environ) == " spaced out "


def test_the_systemd_credential_is_next(tmp_path: Path) -> None:
    (tmp_path / "journal-password").write_text("from-credential\r\n")
    config = JournalConfig(url="postgresql:///db")
    assert load_journal_password(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == (
        "from-credential"
    )


def test_without_either_the_url_and_libpq_decide(tmp_path: Path) -> None:
    config = JournalConfig(url="postgresql:///db")
    assert load_journal_password(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    assert load_journal_password(JournalConfig(), {}) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"one\ntwo\n", "more than one line"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
    ids=["missing", "empty", "just-a-newline", "two-lines", "not-utf8"],
)
def test_a_bad_password_file_is_a_config_error_naming_the_key(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    password_file = tmp_path / "pw"
    if content is not None:
        password_file.write_bytes(content)
    config = JournalConfig(url="postgresql:///db", password_file=password_file)
    with pytest.raises(ConfigError) as caught:
        load_journal_password(config, {})
    (problem,) = caught.value.problems
    assert problem.startswith("journal.password_file: ")
    assert message in problem
    assert "two" not in problem


# --- agentcrond --check-config -------------------------------------------------------------------


def test_check_config_shows_the_journal_without_its_password(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("hunter2\n")
    result = check_config(
        tmp_path,
        "[journal]\n"
        "url = 'postgresql://agentcron:inline-secret@/agentcron?host=/run/postgresql'\n"
        f"password_file = '{password_file}'\n",
    )
    assert result.returncode == 0, result.stderr
    assert "inline-secret" not in result.stdout
    assert "hunter2" not in result.stdout
    assert json.loads(result.stdout)["journal"] == {
        "backend": "postgresql",
        "url": "postgresql://agentcron:***@/agentcron?host=/run/postgresql",
        "password_file": str(password_file),
        "lease_ttl": 10.0,
    }


def test_check_config_without_a_journal_table_is_sqlite(tmp_path: Path) -> None:
    result = check_config(tmp_path, "")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["journal"] == {
        "backend": "sqlite",
        "url": None,
        "password_file": None,
    }


def test_check_config_rejects_an_unreadable_password_file(tmp_path: Path) -> None:
    result = check_config(
        tmp_path,
        "[journal]\nurl = 'postgresql:///agentcron'\npassword_file = '/nonexistent/journal-pw'\n",
    )
    assert result.returncode == 2
    assert "journal.password_file: cannot read /nonexistent/journal-pw" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_lease_lasts_ten_seconds_unless_configured() -> None:
    assert parse_config({}, environ={}).journal.lease_ttl == 10.0
    url = "postgresql:///agentcron?host=/run/postgresql"
    config = parse_config({"journal": {"url": url, "lease_ttl": "2.5s"}}, environ={})
    assert config.journal.lease_ttl == 2.5
    named = parse_config({"daemon": {"node_name": "db-host-2.example:a"}}, environ={})
    assert named.daemon.node_name == "db-host-2.example:a"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            {"journal": {"lease_ttl": "500ms"}},
            "journal.lease_ttl: must be between 1s and 3600s, got 0.5s",
            id="lease-too-short",
        ),
        pytest.param(
            {"journal": {"lease_ttl": "soon"}},
            "journal.lease_ttl: ",
            id="lease-not-a-duration",
        ),
        pytest.param(
            {"daemon": {"node_name": "has space"}},
            "daemon.node_name: must be 1-100 characters of letters, digits, '_', '.', ':' and "
            "'-', starting with a letter or digit, got 'has space'",
            id="node-name",
        ),
    ],
)
def test_bad_leadership_keys_are_named(document: dict[str, Any], expected: str) -> None:
    [problem] = problems_of(document)
    assert problem.startswith(expected)
