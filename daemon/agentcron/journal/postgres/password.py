"""Where the PostgreSQL journal finds its password.

In order, the first that is configured wins:

1. ``journal.password_file``: a file holding the password (must be readable, not empty);
2. the systemd credential ``journal-password``, i.e. ``$CREDENTIALS_DIRECTORY/journal-password``
   (``LoadCredential=journal-password:/etc/agentcron/journal-password`` in the unit);
3. none of ours: the URL's own password, else libpq's ``PGPASSWORD`` and ``~/.pgpass``, else
   a login without one (peer or trust authentication over a Unix socket).

One trailing line break is removed; every other character is part of the password. The
password itself never appears in a message or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agentcron.config import JournalConfig
from agentcron.errors import ConfigError

CREDENTIAL_NAME = "journal-password"
_FILE_KEY = "journal.password_file"


def load_journal_password(config: JournalConfig, environ: Mapping[str, str]) -> str | None:
    """The password to log in with (``None``: leave it to the URL and libpq), or raise
    ``ConfigError`` saying which source failed and why."""
    if config.url is None:
        return None
    if config.password_file is not None:
        return _read_password(config.password_file, _FILE_KEY)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        if path.exists():
            return _read_password(path, f"the systemd credential `{CREDENTIAL_NAME}`")
    return None


def _read_password(path: Path, source: str) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{source}: cannot read {path}: {reason}"]) from exc
    except UnicodeDecodeError:
        # ``from None``: the decode error would carry the file's bytes.
        raise ConfigError([f"{source}: {path} is not UTF-8 text"]) from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError([f"{source}: {path} is empty"])
    if "\n" in password or "\x00" in password:
        raise ConfigError([f"{source}: {path} holds more than one line (one password only)"])
    return password
