"""Where the ``managed_agents`` launcher finds its API key.

In order, the first that is configured wins:

1. ``launcher.managed_agents.api_key_file``: a file holding the key (must be readable and
   not empty);
2. the systemd credential ``anthropic-api-key``, i.e. ``$CREDENTIALS_DIRECTORY/anthropic-api-key``
   (``LoadCredential=anthropic-api-key:/etc/agentcron/api-key`` or
   ``SetCredentialEncrypted=anthropic-api-key:...`` in the unit);
3. the ``ANTHROPIC_API_KEY`` environment variable.

Surrounding whitespace is stripped. The key itself never appears in a message or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agentcron.config import ManagedAgentsConfig
from agentcron.errors import ConfigError

CREDENTIAL_NAME = "anthropic-api-key"
ENV_VAR = "ANTHROPIC_API_KEY"
_FILE_KEY = "launcher.managed_agents.api_key_file"


def load_api_key(config: ManagedAgentsConfig, environ: Mapping[str, str]) -> str:
    """Return the API key, or raise ``ConfigError`` saying which source failed and why."""
    if config.api_key_file is not None:
        return _read_key(config.api_key_file, _FILE_KEY)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        if path.exists():
            return _read_key(path, f"the systemd credential `{CREDENTIAL_NAME}`")
    from_env = environ.get(ENV_VAR, "").strip()
    if from_env:
        _check(from_env, f"the {ENV_VAR} environment variable")
        return from_env
    raise ConfigError(
        [
            "launcher.managed_agents: no API key found: set "
            f"{_FILE_KEY}, pass the systemd credential `{CREDENTIAL_NAME}` "
            f"(LoadCredential={CREDENTIAL_NAME}:/path/to/key), or set {ENV_VAR}"
        ]
    )


def _read_key(path: Path, source: str) -> str:
    try:
        key = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{source}: cannot read {path}: {reason}"]) from exc
    except UnicodeDecodeError:
        # ``from None``: the decode error would carry the file's bytes.
        raise ConfigError([f"{source}: {path} is not UTF-8 text"]) from None
    if not key:
        raise ConfigError([f"{source}: {path} is empty"])
    _check(key, source)
    return key


def _check(key: str, source: str) -> None:
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError(
            [f"{source}: the API key contains whitespace or control characters (one key only)"]
        )
