"""The ``command`` launcher: every session is one local child process.

Agents, environments and vaults are declared in the configuration (``Declarations``). A session
of agent ``A`` in environment ``E`` with vaults ``V...`` is the program ``A.argv`` started:

- in its own session and process group (signals reach the whole tree),
- in the working directory ``E.cwd`` (the daemon's own working directory when unset),
- with stdin the JSON session request (``SessionRequest.session_body()`` plus ``session_id``,
  ``deployment_id`` and ``run_id``), written in full and then closed,
- with stdout and stderr relayed into ``<state_dir>/sessions/<session_id>.log`` (directory
  0700, file 0600), which never grows past ``log_max_bytes`` (``None``: no cap): at the cap
  a marker line is written and the rest discarded, while the child runs on,
- with an environment built in this order, later sources winning: a minimal base taken from the
  daemon (``PATH``, defaulting to ``/usr/local/bin:/usr/bin:/bin``, then ``HOME``, ``USER``,
  ``LOGNAME``, ``LANG``, ``LC_ALL``, ``TZ`` and ``TMPDIR`` when set), the environment's ``env``,
  each vault's env-file in ``vault_ids`` order, and last ``AGENTCRON_SESSION_ID``,
  ``AGENTCRON_DEPLOYMENT_ID`` and ``AGENTCRON_RUN_ID``. Nothing else of the daemon's
  environment is inherited.

Per agent, ``max_duration`` stops a session that runs too long and ``overlap = "skip"`` refuses
a new session (``session_already_running``) while the same deployment's previous one runs here.
Stopping a session (``max_duration``, ``stop_session``, the daemon's shutdown) sends SIGTERM to
its process group and SIGKILL after the agent's ``stop_grace``; each ended session records
why (``end_reason``): ``exited``, ``max_duration``, ``stopped``, ``daemon_shutdown`` or
``spawner_lost`` (the helper died, the exit is unknown).

Vault values reach the child's environment and nowhere else: they are never logged, never part
of the request JSON, never quoted in an error message.

The children are started, fed and reaped by a small helper process (``launchers.spawner``),
so that a burst of sessions costs the daemon's event loop one message per start and one per
exit instead of the fork itself. Starts and exits are handled as the helper reports them (no
task per child), and their records are queued on the journal without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from agentcron import ids
from agentcron.clock import Clock
from agentcron.config import AgentDecl, Declarations, EnvironmentDecl
from agentcron.core.models import AgentRef, RunErrorType
from agentcron.errors import InvalidRequest, LaunchFailure
from agentcron.launchers.base import SessionRecorder, SessionRequest
from agentcron.launchers.spawner import DEFAULT_LOG_CAP, describe_os_error
from agentcron.launchers.spawner_client import SpawnerClient, SpawnError

log = structlog.get_logger(__name__)

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
BASE_ENV_NAMES = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LISTED_NAMES = 20
DEFAULT_LOG_MAX_BYTES = DEFAULT_LOG_CAP
"""A session log's cap (10 MiB) unless the launcher is given another."""
MIN_LOG_MAX_BYTES = 4096
_STOP_WAIT_SLACK = 5.0  # seconds past SIGKILL a stop waits for the exit to be reported


class EnvFileError(ValueError):
    """An env-file line is not ``KEY=VALUE``; the message names the line, never its content."""


def parse_env_file(text: str) -> dict[str, str]:
    """Parse an env-file: ``KEY=VALUE`` lines, ``#`` comments, blank lines.

    A line may start with ``export ``; a value may be wrapped in matching single or double
    quotes, which are removed (nothing else is unescaped or expanded; ``#`` after a value is
    part of the value). Raises ``EnvFileError`` naming the first bad line by number.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _ENV_KEY.match(key) or "\0" in value:
            raise EnvFileError(f"line {number} is not KEY=VALUE")
        if value[:1] in {'"', "'"}:
            if len(value) < 2 or value[-1] != value[0]:
                raise EnvFileError(f"line {number} has an unterminated quote")
            value = value[1:-1]
        values[key] = value
    return values


class VaultFileError(ValueError):
    """A vault's env-file cannot be used; the message names the file, never its content."""


def read_vault_file(path: Path) -> dict[str, str]:
    """Read and parse a vault's env-file (``parse_env_file``).

    Raises ``VaultFileError`` when it cannot be read, is not UTF-8 or is not an env-file: the
    same check at fire time (``vault_not_found``) and in ``agentcrond --check-config``.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise VaultFileError(
            f"cannot read its env_file {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    except UnicodeDecodeError:
        # ``from None``: the decode error carries the file's bytes.
        raise VaultFileError(f"its env_file {path} is not UTF-8 text") from None
    try:
        return parse_env_file(text)
    except EnvFileError as exc:
        raise VaultFileError(f"its env_file {path} is invalid: {exc}") from exc


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the daemon's environment every session inherits (see the module doc)."""
    base = {"PATH": environ.get("PATH") or DEFAULT_PATH}
    base.update({name: environ[name] for name in BASE_ENV_NAMES if environ.get(name)})
    return base


def _listing(kind: str, names: list[str]) -> str:
    if not names:
        return f"no {kind} are declared"
    shown = ", ".join(sorted(names)[:_LISTED_NAMES])
    more = len(names) - _LISTED_NAMES
    return f"declared {kind}: {shown}" + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningSession:
    """What the launcher knows of a local session that runs now (for ``/v1/sessions``)."""

    session_id: str
    run_id: str
    deployment_id: str
    pid: int
    started_at: datetime
    log_path: Path
    stopping: str | None
    """The end reason once a stop began (``max_duration``, ``stopped``, ...), else ``None``."""


class _LocalSession:
    """One child process of the launcher, from its spawn request until its exit was seen.

    The spawner client calls ``child_started`` and ``child_exited`` (a ``ChildListener``) from
    the event loop as the helper reports them.
    """

    __slots__ = (
        "end_reason",
        "exited",
        "kill_timer",
        "launcher",
        "limit_timer",
        "max_duration",
        "pid",
        "request",
        "session_id",
        "started_at",
        "stop_grace",
    )

    def __init__(
        self,
        launcher: CommandLauncher,
        session_id: str,
        request: SessionRequest,
        *,
        max_duration: float | None,
        stop_grace: float,
    ) -> None:
        self.launcher = launcher
        self.session_id = session_id
        self.request = request
        self.pid = 0
        self.exited = anyio.Event()
        self.max_duration = max_duration
        self.stop_grace = stop_grace
        self.end_reason: str | None = None  # set when a stop begins
        self.started_at: datetime | None = None
        self.limit_timer: asyncio.TimerHandle | None = None
        self.kill_timer: asyncio.TimerHandle | None = None

    def child_started(self, pid: int) -> None:
        self.pid = pid
        self.launcher._started(self)

    def child_exited(self, status: int | None, log_bytes: int | None) -> None:
        self.launcher._exited(self, status, log_bytes)


class CommandLauncher:
    """Runs each session as a local child process (SPEC §6, ``command``).

    Must be entered (``async with``) before ``create_session``: it owns the task group of the
    spawner client (which reads the helper's reports). Leaving the context stops every running
    session (SIGTERM, then SIGKILL after ``stop_grace`` seconds).
    """

    def __init__(
        self,
        *,
        declarations: Declarations,
        state_dir: Path,
        max_concurrent_sessions: int,
        stop_grace: float = 10.0,
        recorder: SessionRecorder | None = None,
        clock: Clock,
        log_max_bytes: int | None = DEFAULT_LOG_MAX_BYTES,
        host: str | None = None,
    ) -> None:
        if log_max_bytes is not None and log_max_bytes < MIN_LOG_MAX_BYTES:
            raise ValueError(f"log_max_bytes must be at least {MIN_LOG_MAX_BYTES}")
        self._declarations = declarations
        self._sessions_dir = state_dir / "sessions"
        self._max_concurrent = max_concurrent_sessions
        self._stop_grace = stop_grace
        self._recorder = recorder
        self._clock = clock
        self._base_env = base_environment(os.environ)
        self._task_group: TaskGroup | None = None
        self._spawner: SpawnerClient | None = None
        self._closing = False
        self._spawning = 0
        self._spawns_drained: anyio.Event | None = None
        self._active = 0  # reserved or running children, the number the cap applies to
        self._running: dict[str, _LocalSession] = {}
        self._by_deployment: dict[str, set[_LocalSession]] = {}  # reserved or running
        self._log_max_bytes = log_max_bytes
        self._host = host or socket.gethostname()
        self._sessions_dir_ready = False
        self._unavailable: str | None = None  # why no session can start, until one does

    async def __aenter__(self) -> CommandLauncher:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._spawner = SpawnerClient(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            await task_group.__aexit__(exc_type, exc, tb)

    @property
    def log_max_bytes(self) -> int | None:
        """The cap of the logs of sessions started from now on (``None``: no cap; SIGHUP may
        change it)."""
        return self._log_max_bytes

    @log_max_bytes.setter
    def log_max_bytes(self, value: int | None) -> None:
        if value is not None and value < MIN_LOG_MAX_BYTES:
            raise ValueError(f"log_max_bytes must be at least {MIN_LOG_MAX_BYTES}")
        self._log_max_bytes = value

    def reload(self, declarations: Declarations) -> None:
        """Replace the declared agents, environments and vaults (SIGHUP).

        Sessions already running are not touched; the next creation sees the new declarations.
        """
        self._declarations = declarations

    def running_sessions(self) -> int:
        """How many child processes are running right now."""
        return len(self._running)

    @property
    def host(self) -> str:
        """The host name this launcher's sessions record."""
        return self._host

    @property
    def sessions_dir(self) -> Path:
        """Where session logs are written (``<session_id>.log``)."""
        return self._sessions_dir

    def log_path(self, session_id: str) -> Path:
        """The log file of ``session_id`` (which may not exist)."""
        return self._sessions_dir / f"{session_id}.log"

    def running_session(self, session_id: str) -> RunningSession | None:
        """``session_id`` while it runs here, else ``None``."""
        session = self._running.get(session_id)
        if session is None or session.started_at is None:
            return None
        return RunningSession(
            session_id=session.session_id,
            run_id=session.request.run_id,
            deployment_id=session.request.deployment_id,
            pid=session.pid,
            started_at=session.started_at,
            log_path=self.log_path(session.session_id),
            stopping=session.end_reason,
        )

    async def stop_session(self, session_id: str) -> bool:
        """Stop a running session (SIGTERM to its group, SIGKILL after its agent's
        ``stop_grace``; ``end_reason`` ``stopped``) and return once its exit was seen (or a
        few seconds after the SIGKILL). ``False``: it does not run here."""
        session = self._running.get(session_id)
        if session is None:
            return False
        self._terminate(session, "stopped")
        with anyio.move_on_after(session.stop_grace + _STOP_WAIT_SLACK):
            await session.exited.wait()
        return True

    def spawner_pid(self) -> int | None:
        """The pid of the helper process that starts sessions, while one runs."""
        return None if self._spawner is None else self._spawner.helper_pid()

    # -- the Launcher protocol -------------------------------------------------------------

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        agents = self._declarations.agents
        agent = agents.get(agent_id)
        if agent is None or agent.archived:
            usable = [a.id for a in agents.values() if not a.archived]
            state = "is archived" if agent is not None else "is not declared"
            raise InvalidRequest(f"agent: agent {agent_id!r} {state}; {_listing('agents', usable)}")
        if version is not None and version != agent.version:
            raise InvalidRequest(
                f"agent: agent {agent_id!r} is declared at version {agent.version}, "
                f"not version {version}"
            )
        return AgentRef(id=agent.id, version=agent.version)

    async def validate_environment(self, environment_id: str) -> None:
        environments = self._declarations.environments
        environment = environments.get(environment_id)
        if environment is None or environment.archived:
            usable = [e.id for e in environments.values() if not e.archived]
            state = "is archived" if environment is not None else "is not declared"
            raise InvalidRequest(
                f"environment_id: environment {environment_id!r} {state}; "
                f"{_listing('environments', usable)}"
            )

    async def validate_vaults(self, vault_ids: Sequence[str]) -> None:
        """Every id must name a declared vault that is not archived (its env-file is read at
        fire time: it may appear later)."""
        vaults = self._declarations.vaults
        for index, vault_id in enumerate(vault_ids):
            vault = vaults.get(vault_id)
            if vault is None or vault.archived:
                usable = [v.id for v in vaults.values() if not v.archived]
                state = "is archived" if vault is not None else "is not declared"
                raise InvalidRequest(
                    f"vault_ids[{index}]: vault {vault_id!r} {state}; {_listing('vaults', usable)}"
                )

    def unavailable_reason(self) -> str | None:
        """Set while session logs cannot be created (``Launcher.unavailable_reason``)."""
        return self._unavailable

    async def create_session(self, request: SessionRequest) -> str:
        if self._task_group is None or self._spawner is None or self._closing:
            raise LaunchFailure(
                RunErrorType.SERVICE_UNAVAILABLE,
                "the command launcher is not running (the daemon is stopping)",
            )
        declarations = self._declarations
        agent = self._agent_for(declarations, request)
        environment = self._environment_for(declarations, request)
        secrets = self._vault_environment(declarations, request.vault_ids)
        if agent.overlap == "skip":
            self._refuse_overlap(agent, request.deployment_id)
        if self._active >= self._max_concurrent:
            raise LaunchFailure(
                RunErrorType.SESSION_RATE_LIMITED,
                f"{self._max_concurrent} local sessions are already running "
                "(launcher.max_concurrent_sessions)",
            )
        if agent.version != request.agent.version:
            log.warning(
                "agent_version_differs",
                agent_id=agent.id,
                pinned_version=request.agent.version,
                declared_version=agent.version,
            )
        session_id = ids.new_id(ids.SESSION)
        env = {**self._base_env, **environment.env, **secrets}
        env |= {
            "AGENTCRON_SESSION_ID": session_id,
            "AGENTCRON_DEPLOYMENT_ID": request.deployment_id,
            "AGENTCRON_RUN_ID": request.run_id,
        }
        stdin_data = self._stdin_json(request, session_id)
        session = _LocalSession(
            self,
            session_id,
            request,
            max_duration=agent.max_duration,
            stop_grace=self._stop_grace if agent.stop_grace is None else agent.stop_grace,
        )
        self._active += 1
        self._spawning += 1
        self._reserve(session)
        try:
            # Shielded: once the child runs it must be registered (``_started``) and watched.
            with anyio.CancelScope(shield=True):
                pid = await self._start_child(
                    self._spawner,
                    agent=agent,
                    environment=environment,
                    env=env,
                    session=session,
                    data=stdin_data,
                )
        except BaseException:
            self._active -= 1
            self._release(session)
            raise
        finally:
            self._spawning -= 1
            if not self._spawning and self._spawns_drained is not None:
                self._spawns_drained.set()
        log.debug(
            "session_started",
            session_id=session_id,
            deployment_id=request.deployment_id,
            run_id=request.run_id,
            agent_id=agent.id,
            pid=pid,
        )
        return session_id

    async def aclose(self) -> None:
        """Stop running sessions (SIGTERM to each process group, SIGKILL after the grace), then
        the spawner."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            if self._spawning:  # children being spawned now are stopped with the others
                self._spawns_drained = anyio.Event()
                await self._spawns_drained.wait()
            await self._stop_sessions(list(self._running.values()))
            if self._spawner is not None:
                await self._spawner.aclose()

    async def _stop_sessions(self, sessions: list[_LocalSession]) -> None:
        if not sessions:
            return
        log.info("sessions_stopping", count=len(sessions), grace_seconds=self._stop_grace)
        for session in sessions:
            self._terminate(session, "daemon_shutdown")
        for session in sessions:
            await session.exited.wait()

    def _terminate(self, session: _LocalSession, reason: str) -> None:
        """Begin stopping ``session``: SIGTERM to its group now, SIGKILL after its grace. The
        first reason given is the one recorded."""
        if session.exited.is_set():
            return
        if session.end_reason is None:
            session.end_reason = reason
            log.info(
                "session_stopping",
                session_id=session.session_id,
                reason=reason,
                grace_seconds=session.stop_grace,
            )
        self._signal(session, signal.SIGTERM)
        if session.kill_timer is None:
            loop = asyncio.get_running_loop()
            session.kill_timer = loop.call_later(session.stop_grace, self._kill, session)

    def _kill(self, session: _LocalSession) -> None:
        if not session.exited.is_set():
            log.warning("session_killed", session_id=session.session_id)
            self._signal(session, signal.SIGKILL)

    def _expire(self, session: _LocalSession) -> None:
        session.limit_timer = None
        self._terminate(session, "max_duration")

    def _reserve(self, session: _LocalSession) -> None:
        self._by_deployment.setdefault(session.request.deployment_id, set()).add(session)

    def _release(self, session: _LocalSession) -> None:
        deployment_id = session.request.deployment_id
        sessions = self._by_deployment.get(deployment_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_deployment[deployment_id]

    def _refuse_overlap(self, agent: AgentDecl, deployment_id: str) -> None:
        """``overlap = "skip"``: no second session of a deployment while one runs here."""
        sessions = self._by_deployment.get(deployment_id)
        if not sessions:
            return
        previous = next((s for s in sessions if s.started_at is not None), next(iter(sessions)))
        raise LaunchFailure(
            RunErrorType.SESSION_ALREADY_RUNNING,
            f"the previous session {previous.session_id} of deployment {deployment_id} is "
            f'still running (agents.{agent.id}.overlap = "skip")',
        )

    # -- creation steps --------------------------------------------------------------------

    @staticmethod
    def _agent_for(declarations: Declarations, request: SessionRequest) -> AgentDecl:
        agent = declarations.agents.get(request.agent.id)
        if agent is None:
            raise LaunchFailure(
                RunErrorType.AGENT_ARCHIVED,
                f"agent `{request.agent.id}` is not declared in the configuration",
            )
        if agent.archived:
            raise LaunchFailure(RunErrorType.AGENT_ARCHIVED, f"agent `{agent.id}` is archived")
        return agent

    @staticmethod
    def _environment_for(declarations: Declarations, request: SessionRequest) -> EnvironmentDecl:
        environment_id = request.environment_id
        environment = declarations.environments.get(environment_id)
        if environment is None:
            raise LaunchFailure(
                RunErrorType.ENVIRONMENT_ARCHIVED,
                f"environment `{environment_id}` is not declared in the configuration",
            )
        if environment.archived:
            raise LaunchFailure(
                RunErrorType.ENVIRONMENT_ARCHIVED, f"environment `{environment_id}` is archived"
            )
        return environment

    @staticmethod
    def _vault_environment(declarations: Declarations, vault_ids: list[str]) -> dict[str, str]:
        """The merged env-files of ``vault_ids``; every message names the vault, not values."""
        merged: dict[str, str] = {}
        for vault_id in vault_ids:
            vault = declarations.vaults.get(vault_id)
            if vault is None:
                raise LaunchFailure(
                    RunErrorType.VAULT_NOT_FOUND,
                    f"vault `{vault_id}` is not declared in the configuration",
                )
            if vault.archived:
                raise LaunchFailure(RunErrorType.VAULT_ARCHIVED, f"vault `{vault_id}` is archived")
            try:
                merged.update(read_vault_file(vault.env_file))
            except VaultFileError as exc:
                raise LaunchFailure(
                    RunErrorType.VAULT_NOT_FOUND, f"vault `{vault_id}`: {exc}"
                ) from exc
        return merged

    @staticmethod
    def _stdin_json(request: SessionRequest, session_id: str) -> bytes:
        document: dict[str, Any] = request.session_body()
        document |= {
            "session_id": session_id,
            "deployment_id": request.deployment_id,
            "run_id": request.run_id,
        }
        return json.dumps(document, ensure_ascii=False).encode("utf-8") + b"\n"

    async def _start_child(
        self,
        spawner: SpawnerClient,
        *,
        agent: AgentDecl,
        environment: EnvironmentDecl,
        env: dict[str, str],
        session: _LocalSession,
        data: bytes,
    ) -> int:
        """Have the spawner create the session log, start the child and write its stdin."""
        try:
            if not self._sessions_dir_ready:
                self._sessions_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._sessions_dir.chmod(0o700)
                self._sessions_dir_ready = True
            pid = await spawner.spawn(
                argv=agent.argv,
                cwd=None if environment.cwd is None else str(environment.cwd),
                env=env,
                log_path=self.log_path(session.session_id),
                stdin=data,
                listener=session,
                log_cap=self._log_max_bytes,
            )
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self._log_failure(reason) from exc
        except SpawnError as exc:
            if exc.stage == "log":
                raise self._log_failure(exc.reason) from None
            raise LaunchFailure(
                RunErrorType.SERVICE_UNAVAILABLE, f"cannot start agent `{agent.id}`: {exc.reason}"
            ) from None
        self._unavailable = None
        return pid

    def _log_failure(self, reason: str) -> LaunchFailure:
        """A session log cannot be created: no session of any agent can start."""
        message = f"cannot create the session log in {self._sessions_dir}: {reason}"
        self._unavailable = message
        return LaunchFailure(RunErrorType.SERVICE_UNAVAILABLE, message)

    # -- the life of a child (called by ``_LocalSession`` from the event loop) -------------

    def _started(self, session: _LocalSession) -> None:
        self._running[session.session_id] = session
        session.started_at = self._clock.now()
        if session.max_duration is not None:
            loop = asyncio.get_running_loop()
            session.limit_timer = loop.call_later(session.max_duration, self._expire, session)
        request = session.request
        recorder = self._recorder
        if recorder is None:
            return
        with self._recording("session_started", session.session_id):
            recorder.session_started(
                session_id=session.session_id,
                run_id=request.run_id,
                deployment_id=request.deployment_id,
                pid=session.pid,
                started_at=session.started_at,
                host=self._host,
            )

    def _exited(self, session: _LocalSession, status: int | None, log_bytes: int | None) -> None:
        self._running.pop(session.session_id, None)
        self._release(session)
        self._active -= 1
        for timer in (session.limit_timer, session.kill_timer):
            if timer is not None:
                timer.cancel()
        session.limit_timer = session.kill_timer = None
        session.exited.set()
        if status is None:
            log.warning("session_exit_unknown", session_id=session.session_id)
            reason = "spawner_lost"
        else:
            reason = session.end_reason or "exited"
        log.debug(
            "session_ended", session_id=session.session_id, exit_status=status, end_reason=reason
        )
        recorder = self._recorder
        if recorder is None:
            return
        with self._recording("session_ended", session.session_id):
            recorder.session_ended(
                session_id=session.session_id,
                exit_status=status,
                ended_at=self._clock.now(),
                end_reason=reason,
                log_bytes=log_bytes,
            )

    @staticmethod
    @contextlib.contextmanager
    def _recording(event: str, session_id: str) -> Iterator[None]:
        """Log, never raise, a failure to record a session's life: a journal failure must not
        orphan the child."""
        try:
            yield
        except Exception as exc:  # the record fails alone; the session goes on
            log.error(
                "session_record_failed",
                event=event,
                session_id=session_id,
                error=f"{type(exc).__name__}: {exc}",
            )

    @staticmethod
    def _signal(session: _LocalSession, signum: signal.Signals) -> None:
        try:
            os.killpg(session.pid, signum)
        except ProcessLookupError:
            return
        except OSError as exc:
            log.warning(
                "session_signal_failed",
                session_id=session.session_id,
                signal=signum.name,
                error=describe_os_error(exc),
            )
