"""Configuration: the TOML file of SPEC §7 as typed, validated values.

``load_config`` (below) reads a file, applies command-line overrides and returns a ``Config``
or raises ``ConfigError`` listing every problem, each naming its key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from agentcron.core.events import DEFAULT_RETRY_DELAYS, DEFAULT_RETRY_FOR, EventType
from agentcron.core.models import RunErrorType
from agentcron.core.timeutil import parse_duration
from agentcron.errors import ConfigError
from agentcron.paths import default_socket_path

LauncherType = Literal["command", "managed_agents"]
Overlap = Literal["allow", "skip"]
MAX_SESSION_DURATION = 366 * 86400.0
"""The longest ``max_duration`` an agent may declare (a year and a day)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDecl:
    """A local agent for the ``command`` launcher: a program and its version."""

    id: str
    version: int
    argv: tuple[str, ...]
    archived: bool = False
    max_duration: float | None = None
    """Seconds a session may run before it is stopped (SIGTERM, SIGKILL after the grace)."""
    stop_grace: float | None = None
    """Seconds between SIGTERM and SIGKILL for this agent (``None``: ``[launcher] stop_grace``)."""
    overlap: Overlap = "allow"
    """``skip``: no new session while the deployment's previous one still runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvironmentDecl:
    """A local environment: a working directory and environment variables."""

    id: str
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    archived: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultDecl:
    """A local vault: an env-file of credentials merged into the session's environment."""

    id: str
    env_file: Path
    archived: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Declarations:
    """What the ``command`` launcher knows; replaced as a whole on SIGHUP."""

    agents: dict[str, AgentDecl] = field(default_factory=dict)
    environments: dict[str, EnvironmentDecl] = field(default_factory=dict)
    vaults: dict[str, VaultDecl] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagedAgentsConfig:
    """Settings of the ``managed_agents`` launcher."""

    base_url: str = "https://api.anthropic.com"
    api_key_file: Path | None = None
    timeout: float = 30.0


DEFAULT_MAX_CONCURRENT_CREATIONS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class LauncherConfig:
    type: LauncherType = "command"
    max_concurrent_sessions: int = 16
    max_concurrent_creations: int = DEFAULT_MAX_CONCURRENT_CREATIONS
    """Fires (claim, session creation, completion) in flight at once, either launcher."""
    stop_grace: float = 10.0
    managed_agents: ManagedAgentsConfig = field(default_factory=ManagedAgentsConfig)


DEFAULT_LEASE_TTL = 10.0
"""``[journal] lease_ttl``: how long a leader's lease lasts unless renewed (seconds)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonConfig:
    state_dir: Path
    socket: Path
    socket_group: str | None = None
    allowed_uids: tuple[int, ...] = ()
    allowed_gids: tuple[int, ...] = ()
    max_deployments: int = 1000
    max_jitter: float = 10.0
    misfire_grace: float = 60.0
    max_request_bytes: int = 10 * 1024 * 1024
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    auto_pause_on: tuple[str, ...] = ()
    node_name: str | None = None
    """This daemon's name among daemons sharing a PostgreSQL journal (default: the host name)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalConfig:
    """Where the journal lives: ``url`` is a PostgreSQL database, ``None`` the SQLite file
    ``journal.db`` in the state directory (the default)."""

    url: str | None = None
    password_file: Path | None = None
    lease_ttl: float = DEFAULT_LEASE_TTL
    """Seconds a leader's lease lasts unless renewed (renewed every third of it)."""

    @property
    def location(self) -> str | None:
        """``url`` without its password (what may be shown or logged)."""
        return None if self.url is None else redact_url(self.url)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookConfig:
    """One ``[[webhooks]]`` endpoint. The secret stays in its file (read at start)."""

    name: str
    url: str
    secret_file: Path
    events: tuple[str, ...]
    timeout: float = 10.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    retry_for: float = DEFAULT_RETRY_FOR


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """``[metrics]``: the optional TCP listener that serves only ``/metrics``."""

    listen: tuple[str, int] | None = None


DAY = 86_400.0
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionConfig:
    """``[retention]``: how long the journal keeps runs, sessions and their logs (every key
    optional; ``None`` is ``"off"``: kept forever, no limit). README: Retention and backups."""

    runs: float | None = 90 * DAY
    """Seconds a completed run is kept (its webhook outbox rows too, once settled)."""
    sessions: float | None = 30 * DAY
    """Seconds a local session's journal row and log file are kept after it ended."""
    session_log_max_bytes: int | None = 10 * MIB
    """The cap of one session's log file (the command launcher truncates at it)."""
    runs_max_count: int | None = 1_000_000
    """At most this many completed runs are kept (oldest pruned first)."""
    session_logs_max_bytes: int | None = 1024 * MIB
    """At most this many bytes of session logs are kept (oldest ended sessions pruned first)."""
    interval: float = 60.0
    """Seconds between two pruning passes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    daemon: DaemonConfig
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    declarations: Declarations = field(default_factory=Declarations)
    journal: JournalConfig = field(default_factory=JournalConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)


_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with any password (``user:secret@`` or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{_REDACTED}@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        redacted = [(key, _REDACTED if key == "password" else value) for key, value in pairs]
        query = urlencode(redacted, safe="/*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Not urlunsplit: it drops the empty host of "postgresql:///db?host=/dir".
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


# --------------------------------------------------------------------------------------------
# Loading

_RUN_ERROR_TYPES = frozenset(error_type.value for error_type in RunErrorType)
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/agentcron``."""
    if state := environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = environ.get("XDG_STATE_HOME") or str(
        Path(environ.get("HOME", "~")).expanduser() / ".local" / "state"
    )
    return Path(base) / "agentcron"


def default_socket(environ: Mapping[str, str]) -> Path:
    """The control socket the CLI looks for first (``agentcron.paths.default_socket_path``)."""
    return default_socket_path(environ)


class _Reader:
    """Walks one TOML table, collecting a problem per bad key instead of stopping at the first."""

    def __init__(
        self,
        table: Mapping[str, Any],
        prefix: str,
        problems: list[str],
        base_dir: Path | None = None,
    ) -> None:
        self.table = table
        self.prefix = prefix
        self.problems = problems
        self.base_dir = base_dir
        self.seen: set[str] = set()

    def child(self, table: Mapping[str, Any], prefix: str) -> _Reader:
        return _Reader(table, prefix, self.problems, self.base_dir)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
            self.problem(name, f"expected {_kind_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problem(name, f"expected {_kind_name(kind)}, got {type(value).__name__}")
            return default
        return value

    def duration(
        self, name: str, default: float, *, low: float = 0.0, high: float | None = None
    ) -> float:
        self.seen.add(name)
        if name not in self.table:
            return default
        try:
            seconds = parse_duration(self.table[name])
        except ValueError as exc:
            self.problem(name, str(exc))
            return default
        if seconds < low or (high is not None and seconds > high):
            limit = f"between {low:g}s and {high:g}s" if high is not None else f"at least {low:g}s"
            self.problem(name, f"must be {limit}, got {seconds:g}s")
            return default
        return seconds

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self.get(name, int, default)
        if value != default and (value < low or (high is not None and value > high)):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(name, f"must be {limit}, got {value}")
            return default
        return int(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def path(self, name: str, default: Path | None) -> Path | None:
        value = self.get(name, str, None)
        if value is None:
            return default
        if not value:
            self.problem(name, "must not be empty")
            return default
        path = Path(value).expanduser()
        if self.base_dir is not None and not path.is_absolute():
            path = self.base_dir / path
        return path

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        if not all(isinstance(item, str) for item in value):
            self.problem(name, "expected a list of strings")
            return ()
        return tuple(value)

    def integers(self, name: str) -> tuple[int, ...]:
        value = self.get(name, list, [])
        if not all(
            isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
        ):
            self.problem(name, "expected a list of non-negative integers")
            return ()
        return tuple(value)

    def string_table(self, name: str) -> dict[str, str]:
        value = self.get(name, dict, {})
        if not all(isinstance(v, str) for v in value.values()):
            self.problem(name, "expected a table of string values")
            return {}
        return dict(value)

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def finish(self) -> None:
        for name in self.table:
            if name not in self.seen:
                self.problems.append(f"{self.key(name)}: unknown key")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def parse_config(
    document: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate a parsed TOML document (plus ``overrides`` of ``[daemon]`` keys from flags).

    Relative paths in the document are resolved against ``base_dir`` (the config file's
    directory). Raises ``ConfigError`` listing every problem, each naming its key.
    """
    problems: list[str] = []
    top = _Reader(document, "", problems, base_dir)
    daemon_table = dict(top.get("daemon", dict, {}))
    daemon_table.update({k: v for k, v in (overrides or {}).items() if v is not None})
    launcher_table = top.get("launcher", dict, {})
    agents_table = top.get("agents", dict, {})
    environments_table = top.get("environments", dict, {})
    vaults_table = top.get("vaults", dict, {})
    journal_table = top.get("journal", dict, {})
    webhooks_list = top.get("webhooks", list, [])
    metrics_table = top.get("metrics", dict, {})
    retention_table = top.get("retention", dict, {})
    top.finish()

    d = top.child(daemon_table, "daemon")
    auto_pause_on = d.strings("auto_pause_on")
    for item in auto_pause_on:
        if item not in _RUN_ERROR_TYPES:
            d.problem(
                "auto_pause_on",
                f"{item!r} is not a run error type ({', '.join(sorted(_RUN_ERROR_TYPES))})",
            )
    daemon = DaemonConfig(
        state_dir=d.path("state_dir", None) or default_state_dir(environ),
        socket=d.path("socket", None) or default_socket(environ),
        socket_group=d.get("socket_group", str, None),
        allowed_uids=d.integers("allowed_uids"),
        allowed_gids=d.integers("allowed_gids"),
        max_deployments=d.integer("max_deployments", 1000, low=1),
        max_jitter=d.duration("max_jitter", 10.0, high=10.0),
        misfire_grace=d.duration("misfire_grace", 60.0),
        max_request_bytes=d.integer("max_request_bytes", 10 * 1024 * 1024, low=1024),
        log_format=d.choice("log_format", ("auto", "json", "console"), "auto"),  # type: ignore[arg-type]
        log_level=d.choice("log_level", _LOG_LEVELS, "info"),
        auto_pause_on=auto_pause_on,
        node_name=_node_name(d),
    )
    d.finish()

    lr = top.child(launcher_table, "launcher")
    launcher_type = lr.choice("type", ("command", "managed_agents"), "command")
    max_sessions = lr.integer("max_concurrent_sessions", 16, low=1, high=100_000)
    max_creations = lr.integer(
        "max_concurrent_creations", DEFAULT_MAX_CONCURRENT_CREATIONS, low=1, high=10_000
    )
    stop_grace = lr.duration("stop_grace", 10.0, high=3600.0)
    ma_table = lr.get("managed_agents", dict, {})
    lr.finish()
    ma = top.child(ma_table, "launcher.managed_agents")
    base_url = ma.get("base_url", str, "https://api.anthropic.com")
    if not base_url.startswith(("http://", "https://")):
        ma.problem("base_url", f"must start with http:// or https://, got {base_url!r}")
    managed = ManagedAgentsConfig(
        base_url=base_url.rstrip("/"),
        api_key_file=ma.path("api_key_file", None),
        timeout=ma.duration("timeout", 30.0, low=0.001, high=3600.0),
    )
    ma.finish()
    launcher = LauncherConfig(
        type=launcher_type,  # type: ignore[arg-type]
        max_concurrent_sessions=max_sessions,
        max_concurrent_creations=max_creations,
        stop_grace=stop_grace,
        managed_agents=managed,
    )

    declarations = Declarations(
        agents=_declared(top, agents_table, "agents", _agent),
        environments=_declared(top, environments_table, "environments", _environment),
        vaults=_declared(top, vaults_table, "vaults", _vault),
    )
    jr = top.child(journal_table, "journal")
    journal = _journal(jr)
    jr.finish()
    webhooks = _webhooks(top, webhooks_list)
    mr = top.child(metrics_table, "metrics")
    metrics = MetricsConfig(listen=_listen_address(mr, "listen"))
    mr.finish()
    rr = top.child(retention_table, "retention")
    retention = _retention(rr)
    rr.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        daemon=daemon,
        launcher=launcher,
        declarations=declarations,
        journal=journal,
        webhooks=webhooks,
        metrics=metrics,
        retention=retention,
    )


def _journal(r: _Reader) -> JournalConfig:
    url = r.get("url", str, None)
    password_file = r.path("password_file", None)
    lease_ttl = r.duration("lease_ttl", DEFAULT_LEASE_TTL, low=1.0, high=3600.0)
    if url is not None:
        parts = urlsplit(url)
        shown = redact_url(url)
        if parts.scheme not in _POSTGRES_SCHEMES:
            r.problem(
                "url",
                f"must be a PostgreSQL URL (postgresql://user@host/db or "
                f"postgresql:///db?host=/run/postgresql), got {shown!r}",
            )
        elif not parts.path.strip("/"):
            r.problem("url", f"must name the database (postgresql://.../DBNAME), got {shown!r}")
        elif parts.fragment:
            r.problem("url", f"must not have a #fragment, got {shown!r}")
    elif password_file is not None:
        r.problem("password_file", "is only used with journal.url (a PostgreSQL journal)")
    return JournalConfig(url=url, password_file=password_file, lease_ttl=lease_ttl)


def _node_name(r: _Reader) -> str | None:
    name = r.get("node_name", str, None)
    if name is not None and not _NODE_NAME.match(name):
        r.problem(
            "node_name",
            "must be 1-100 characters of letters, digits, '_', '.', ':' and '-', starting "
            f"with a letter or digit, got {name!r}",
        )
        return None
    return None if name is None else str(name)


_WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_EVENT_TYPES = tuple(event_type.value for event_type in EventType)


def _webhooks(top: _Reader, items: list[Any]) -> tuple[WebhookConfig, ...]:
    """The ``[[webhooks]]`` endpoints; each needs a distinct ``name`` (default: the URL's
    host and port, which never holds a path or query that might carry a token)."""
    result: list[WebhookConfig] = []
    names: set[str] = set()
    for index, body in enumerate(items):
        prefix = f"webhooks[{index}]"
        if not isinstance(body, dict):
            top.problems.append(f"{prefix}: expected a table")
            continue
        r = top.child(body, prefix)
        url = r.get("url", str, "")
        parts = urlsplit(url)
        if "url" not in body:
            r.problem("url", "is required (http:// or https://)")
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            r.problem("url", "must be an http:// or https:// URL with a host")
        default_name = parts.netloc.rpartition("@")[2] if parts.hostname else f"webhook-{index}"
        name = r.get("name", str, default_name)
        if not _WEBHOOK_NAME.match(name):
            r.problem("name", "must be 1-64 letters, digits, '_', '.', ':' or '-'")
        elif name in names:
            r.problem("name", f"{name!r} is used by another webhook; give each a distinct name")
        names.add(name)
        secret_file = r.path("secret_file", None)
        if secret_file is None and "secret_file" not in body:
            r.problem("secret_file", "is required (a file holding a whsec_... secret)")
        events = r.strings("events")
        if "events" not in body or not events:
            r.problem("events", f"must list at least one of {', '.join(_EVENT_TYPES)}")
        for event in events:
            if event not in _EVENT_TYPES:
                r.problem("events", f"{event!r} is not an event ({', '.join(_EVENT_TYPES)})")
        delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
        if "retry_delays" in body:
            delays = _durations(r, "retry_delays") or DEFAULT_RETRY_DELAYS
        result.append(
            WebhookConfig(
                name=name,
                url=url,
                secret_file=secret_file or Path("/nonexistent"),
                events=tuple(dict.fromkeys(events)),
                timeout=r.duration("timeout", 10.0, low=0.001, high=300.0),
                retry_delays=delays,
                retry_for=r.duration("retry_for", DEFAULT_RETRY_FOR, low=1.0),
            )
        )
        r.finish()
    return tuple(result)


_OFF = ("off", "0")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "TiB": 1024**2 * MIB}


def _retention(r: _Reader) -> RetentionConfig:
    """``[retention]``; every limit also takes ``"off"`` (or ``0``): no limit."""
    default = RetentionConfig()
    return RetentionConfig(
        runs=_retention_period(r, "runs", default.runs),
        sessions=_retention_period(r, "sessions", default.sessions),
        session_log_max_bytes=_size_or_off(
            r, "session_log_max_bytes", default.session_log_max_bytes, low=4096
        ),
        runs_max_count=_count_or_off(r, "runs_max_count", default.runs_max_count, low=1000),
        session_logs_max_bytes=_size_or_off(
            r, "session_logs_max_bytes", default.session_logs_max_bytes, low=MIB
        ),
        interval=r.duration("interval", default.interval, low=1.0, high=DAY),
    )


def _is_off(value: Any) -> bool:
    return (isinstance(value, str) and value.strip().lower() in _OFF) or (
        isinstance(value, int) and not isinstance(value, bool) and value == 0
    )


def _retention_period(r: _Reader, name: str, default: float | None) -> float | None:
    """A duration of at least one minute (``"90d"``, ``"12h"``), or ``"off"``."""
    r.seen.add(name)
    if name not in r.table:
        return default
    value = r.table[name]
    if _is_off(value):
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        r.problem(name, f"{exc}, or 'off' to keep forever")
        return default
    if seconds < 60:
        r.problem(name, f"must be at least 1m (or 'off' to keep forever), got {seconds:g}s")
        return default
    return seconds


def _size_or_off(r: _Reader, name: str, default: int | None, *, low: int) -> int | None:
    """A size in bytes (``4096``, ``"512KiB"``, ``"10MiB"``, ``"2GiB"``) of at least ``low``,
    or ``"off"``."""
    r.seen.add(name)
    if name not in r.table:
        return default
    value = r.table[name]
    if _is_off(value):
        return None
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size is None:
        r.problem(
            name,
            f"{value!r} is not a size: use a number of bytes or '512KiB', '10MiB', '2GiB' "
            "(or 'off')",
        )
        return default
    if size < low:
        r.problem(name, f"must be at least {low} bytes (or 'off'), got {size}")
        return default
    return size


def _count_or_off(r: _Reader, name: str, default: int | None, *, low: int) -> int | None:
    """A whole number of at least ``low``, or ``"off"`` (``0``)."""
    r.seen.add(name)
    if name not in r.table:
        return default
    value = r.table[name]
    if _is_off(value):
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        r.problem(name, f"expected an integer (or 'off'), got {type(value).__name__}")
        return default
    if value < low:
        r.problem(name, f"must be at least {low} (or 'off'), got {value}")
        return default
    return value


def _durations(r: _Reader, name: str) -> tuple[float, ...]:
    value = r.get(name, list, [])
    delays: list[float] = []
    for item in value:
        try:
            seconds = parse_duration(item)
        except ValueError as exc:
            r.problem(name, str(exc))
            return ()
        if seconds <= 0:
            r.problem(name, "every delay must be more than 0s")
            return ()
        delays.append(seconds)
    if not delays:
        r.problem(name, 'must list at least one delay, e.g. ["5s", "30s", "2m"]')
    return tuple(delays)


def _listen_address(r: _Reader, name: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` as (host, port); unset: ``None``."""
    value = r.get(name, str, None)
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        r.problem(name, f"expected HOST:PORT such as 127.0.0.1:9464, got {value!r}")
        return None
    return host, int(port)


def _declared(
    top: _Reader,
    table: Mapping[str, Any],
    section: str,
    build: Callable[[str, _Reader], Any],
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, body in table.items():
        if not isinstance(body, dict):
            top.problems.append(f"{section}.{name}: expected a table")
            continue
        reader = top.child(body, f"{section}.{name}")
        result[name] = build(name, reader)
        reader.finish()
    return result


def _agent(name: str, r: _Reader) -> AgentDecl:
    argv = r.strings("argv")
    if "argv" not in r.table:
        r.problem("argv", "is required (the program and its arguments)")
    elif not argv:
        r.problem("argv", "must not be empty")
    max_duration = stop_grace = None
    if "max_duration" in r.table:
        max_duration = r.duration("max_duration", 0.0, low=1.0, high=MAX_SESSION_DURATION) or None
    if "stop_grace" in r.table:
        stop_grace = r.duration("stop_grace", -1.0, high=3600.0)
        stop_grace = None if stop_grace < 0 else stop_grace
    overlap = r.choice("overlap", ("allow", "skip"), "allow")
    return AgentDecl(
        id=name,
        version=r.integer("version", 1, low=1),
        argv=argv,
        archived=r.get("archived", bool, False),
        max_duration=max_duration,
        stop_grace=stop_grace,
        overlap=overlap,  # type: ignore[arg-type]
    )


def _environment(name: str, r: _Reader) -> EnvironmentDecl:
    return EnvironmentDecl(
        id=name,
        cwd=r.path("cwd", None),
        env=r.string_table("env"),
        archived=r.get("archived", bool, False),
    )


def _vault(name: str, r: _Reader) -> VaultDecl:
    env_file = r.path("env_file", None)
    if env_file is None and "env_file" not in r.table:
        r.problem("env_file", "is required (a file of KEY=VALUE lines)")
    return VaultDecl(
        id=name,
        env_file=env_file or Path("/nonexistent"),
        archived=r.get("archived", bool, False),
    )


def load_config(
    path: Path | None,
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read ``path`` (TOML; ``None`` = built-in defaults) and validate it with ``parse_config``."""
    document: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    base_dir = path.resolve().parent if path is not None else None
    return parse_config(document, environ=environ, overrides=overrides, base_dir=base_dir)
