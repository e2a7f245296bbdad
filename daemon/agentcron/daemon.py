"""``agentcrond``: the daemon's entry point and its one composition root.

config -> logging -> state-dir lock -> journal -> launcher -> ``build_stack`` (service, deployment
copies, firing, scheduler) -> API, in one task group inside one ``AsyncExitStack``. Tests and
benchmarks wire the runtime with the same ``build_stack``. ``READY=1`` goes out only once the
journal is open, the scheduler has rebuilt its heap and the socket is bound. A crash of any part
cancels the group and the process exits non-zero with the reason logged, instead of running
half-alive.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import structlog

from agentcron import __version__
from agentcron.api.app import create_app
from agentcron.api.observability import serve_metrics
from agentcron.api.socket import bind_control_socket, serve
from agentcron.clock import Clock, SystemClock
from agentcron.config import Config, load_config
from agentcron.errors import AgentcronError, ConfigError, StartupError
from agentcron.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agentcron.health import Reason
from agentcron.journal import Journal, open_journal
from agentcron.journal.postgres.password import load_journal_password
from agentcron.launchers import create_launcher
from agentcron.launchers.base import Launcher
from agentcron.launchers.command import CommandLauncher
from agentcron.launchers.command_checks import declaration_problems
from agentcron.launchers.managed_agents import load_api_key
from agentcron.logs import configure_logging
from agentcron.metrics import Metrics, RunningSessions
from agentcron.runtime.copies import DeploymentCopies
from agentcron.runtime.delivery import Endpoint, WebhookDelivery, load_endpoints, redacted_url
from agentcron.runtime.firing import Firing
from agentcron.runtime.outbox import Outbox
from agentcron.runtime.retention import Pruner
from agentcron.runtime.roles import Standalone, node_id
from agentcron.runtime.scheduler import Scheduler
from agentcron.runtime.service import DeploymentService
from agentcron.runtime.sessions import HostedSessions, LocalSessions, Sessions
from agentcron.systemd import Notifier, listen_fds

if TYPE_CHECKING:
    from agentcron.runtime.leadership import Leadership

log = structlog.get_logger("agentcron.daemon")

STATUS_INTERVAL = 10.0
GC_THRESHOLDS = (50_000, 10, 10)
"""The cyclic collector's thresholds (CPython's default is ``(700, 10, 10)``).

The youngest generation is collected when the tracked objects allocated and not yet freed
exceed the first number. A fire storm keeps hundreds of creations in flight, each holding
a few dozen live objects, so at 700 the collector ran about once per fire and rescanned that
in-flight state each time, and the frequent promotions triggered full collections over every
deployment copy: in a 10,000-fire burst this took about a quarter of the event loop's time.
At 50,000 it runs about once per burst; objects freed by reference counting (nearly all of
them) never wait for it, and cyclic garbage waits at most that many allocations.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stack:
    """The runtime over one journal and one launcher (what ``build_stack`` wires)."""

    journal: Journal
    launcher: Launcher
    service: DeploymentService
    copies: DeploymentCopies
    firing: Firing
    scheduler: Scheduler
    metrics: Metrics
    outbox: Outbox
    webhooks: WebhookDelivery
    """The delivery worker: ``await tg.start(stack.webhooks.run)`` starts delivering."""


class _MetricsSources:
    """What ``Metrics.render`` reads from the stack before each scrape."""

    def __init__(self, journal: Journal, scheduler: Scheduler, launcher: Launcher) -> None:
        self._journal = journal
        self._scheduler = scheduler
        self._launcher = launcher

    async def counts(self) -> dict[str, int]:
        return await self._journal.counts()

    async def storage_bytes(self) -> int:
        return await self._journal.storage_bytes()

    def next_fire_at(self) -> datetime | None:
        return self._scheduler.next_fire_at()

    def sessions_running(self) -> int:
        launcher = self._launcher
        return launcher.running_sessions() if isinstance(launcher, RunningSessions) else 0


def build_stack(
    *,
    journal: Journal,
    launcher: Launcher,
    clock: Clock,
    max_deployments: int = 1000,
    max_jitter: float = 10.0,
    misfire_grace: float = 60.0,
    auto_pause_on: Iterable[str] = (),
    max_concurrent_fires: int = 64,
    max_sleep: float = 30.0,
    shutdown_grace: float = 10.0,
    heartbeat: Callable[[], None] | None = None,
    metrics: Metrics | None = None,
    webhooks: Sequence[Endpoint] = (),
) -> Stack:
    """Wire the service, the deployment copies, the fire path, the scheduler, the metrics and
    the webhook outbox and its delivery worker.

    Every committed change reaches the copies and then the scheduler (service subscribers, in
    that order). Nothing runs yet: ``await tg.start(stack.scheduler.run)`` starts firing and
    ``await tg.start(stack.webhooks.run)`` delivering.
    """
    metrics = metrics or Metrics()
    outbox = Outbox(
        journal=journal,
        clock=clock,
        subscriptions={endpoint.name: endpoint.config.events for endpoint in webhooks},
    )
    delivery = WebhookDelivery(journal=journal, endpoints=webhooks, clock=clock, metrics=metrics)
    outbox.on_commit(delivery.wake)
    service = DeploymentService(
        journal, launcher, clock, max_deployments=max_deployments, outbox=outbox
    )
    copies = DeploymentCopies(journal)
    service.subscribe(copies.changed)
    firing = Firing(
        journal=journal,
        service=service,
        launcher=launcher,
        clock=clock,
        copies=copies,
        auto_pause_on=auto_pause_on,
        max_concurrent_fires=max_concurrent_fires,
        outbox=outbox,
        metrics=metrics,
    )
    scheduler = Scheduler(
        journal=journal,
        firing=firing,
        copies=copies,
        clock=clock,
        max_jitter=max_jitter,
        misfire_grace=misfire_grace,
        max_sleep=max_sleep,
        shutdown_grace=shutdown_grace,
        heartbeat=heartbeat,
        outbox=outbox,
        metrics=metrics,
    )
    service.subscribe(scheduler.deployment_changed)
    metrics.attach(_MetricsSources(journal, scheduler, launcher))
    return Stack(
        journal=journal,
        launcher=launcher,
        service=service,
        copies=copies,
        firing=firing,
        scheduler=scheduler,
        metrics=metrics,
        outbox=outbox,
        webhooks=delivery,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentcrond", description="The agentcron daemon (see agentcron(1) for the client)."
    )
    parser.add_argument("--version", action="version", version=f"agentcrond {__version__}")
    parser.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration (and the programs, directories and env-files it names), "
        "print the effective settings and exit (0 ok, 2 invalid)",
    )
    parser.add_argument("--state-dir", help="override [daemon] state_dir")
    parser.add_argument("--socket", help="override [daemon] socket")
    parser.add_argument("--log-level", help="override [daemon] log_level")
    parser.add_argument("--log-format", help="override [daemon] log_format")
    return parser


def read_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The effective configuration: the file, then the flags on top. Raises ``ConfigError``."""
    overrides = {
        "state_dir": args.state_dir,
        "socket": args.socket,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    config = load_config(args.config, environ=environ, overrides=overrides)
    if config.launcher.type == "managed_agents":
        load_api_key(config.launcher.managed_agents, environ)
    load_journal_password(config.journal, environ)
    load_endpoints(config.webhooks)  # every secret file must hold a whsec_ secret
    return config


def effective_settings(config: Config) -> dict[str, Any]:
    """The configuration as JSON-ready data (the API key, the journal's password and webhook
    secrets are never part of it; a webhook URL shows only its scheme, host and port)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {
        "daemon": plain(dataclasses.asdict(config.daemon)),
        "launcher": plain(dataclasses.asdict(config.launcher)),
        "journal": {
            "backend": "sqlite" if config.journal.url is None else "postgresql",
            "url": config.journal.location,
            "password_file": plain(config.journal.password_file),
            **({} if config.journal.url is None else {"lease_ttl": config.journal.lease_ttl}),
        },
        "agents": sorted(config.declarations.agents),
        "environments": sorted(config.declarations.environments),
        "vaults": sorted(config.declarations.vaults),
        "webhooks": [
            {**plain(dataclasses.asdict(webhook)), "url": redacted_url(webhook.url)}
            for webhook in config.webhooks
        ],
        "metrics": plain(dataclasses.asdict(config.metrics)),
        "retention": plain(dataclasses.asdict(config.retention)),
    }


class StateLock:
    """An exclusive ``flock`` on ``<state_dir>/agentcron.lock``: one daemon per state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agentcron.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StartupError(
                f"another agentcrond (pid {holder}) is already running on state directory "
                f"{self.path.parent}; stop it first or use another state_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _status_line(
    service_counts: Mapping[str, int],
    health: Mapping[str, Any],
    reasons: Sequence[Reason] = (),
) -> str:
    next_fire = health.get("next_fire_at") or "none"
    line = (
        f"{service_counts.get('active', 0)} active, {service_counts.get('paused', 0)} paused "
        f"deployments; next fire {next_fire}"
    )
    if reasons:
        line += "; degraded: " + "; ".join(reason.message for reason in reasons)
    return line


async def run_daemon(
    config: Config,
    *,
    read_config: Callable[[], Config],
    environ: dict[str, str],
    notifier: Notifier,
    clock: Clock,
) -> None:
    """Run until SIGTERM/SIGINT (returns) or until a part crashes (raises).

    ``read_config`` re-reads the configuration for SIGHUP.
    """
    daemon_cfg = config.daemon
    lock = StateLock(daemon_cfg.state_dir)
    lock.acquire()
    metrics = Metrics(launcher=config.launcher.type)
    endpoints = load_endpoints(config.webhooks)
    async with AsyncExitStack() as stack:
        stack.callback(lock.release)
        journal = await stack.enter_async_context(
            open_journal(
                config.journal,
                state_dir=daemon_cfg.state_dir,
                environ=environ,
                clock=clock,
                on_commit=metrics.journal_commit.observe,
            )
        )
        launcher = create_launcher(config, recorder=journal, clock=clock)
        await stack.enter_async_context(launcher)
        sessions = await open_sessions(config, journal, launcher, clock)
        max_sleep = 30.0
        if notifier.watchdog_interval is not None:
            max_sleep = min(max_sleep, notifier.watchdog_interval / 2)
        runtime = build_stack(
            journal=journal,
            launcher=launcher,
            clock=clock,
            max_deployments=daemon_cfg.max_deployments,
            max_jitter=daemon_cfg.max_jitter,
            misfire_grace=daemon_cfg.misfire_grace,
            auto_pause_on=daemon_cfg.auto_pause_on,
            max_concurrent_fires=config.launcher.max_concurrent_creations,
            max_sleep=max_sleep,
            shutdown_grace=config.launcher.stop_grace,
            heartbeat=notifier.watchdog,
            metrics=metrics,
            webhooks=endpoints,
        )
        service, scheduler = runtime.service, runtime.scheduler
        leadership = leadership_for(config, journal, runtime)
        pruner = build_pruner(config, runtime, clock)
        app = create_app(
            service=service,
            manual_runs=runtime.firing,
            scheduler=scheduler,
            clock=clock,
            journal_path=journal.location,
            max_request_bytes=daemon_cfg.max_request_bytes,
            allowed_uids=daemon_cfg.allowed_uids,
            allowed_gids=daemon_cfg.allowed_gids,
            metrics=metrics,
            webhooks=runtime.webhooks,
            leadership=leadership,
            retention=pruner,
            sessions=sessions,
        )
        inherited = listen_fds(environ)
        sock = (
            inherited[0]
            if inherited
            else bind_control_socket(daemon_cfg.socket, group=daemon_cfg.socket_group)
        )

        async def keep_status_current() -> None:
            while True:
                counts, reasons = await service.counts(), await service.degraded_reasons()
                notifier.status(_status_line(counts, scheduler.health(), reasons))
                await anyio.sleep(STATUS_INTERVAL)

        async def handle_signals(scope: anyio.CancelScope) -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        reload(read_config, launcher, environ, pruner=pruner)
                        continue
                    log.info("daemon_stopping", signal=signal.Signals(signum).name)
                    notifier.stopping()
                    scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(handle_signals, tg.cancel_scope)
            if not isinstance(leadership, Standalone):  # several daemons may share the journal
                await tg.start(leadership.run)
            else:
                await tg.start(runtime.webhooks.run)
                await tg.start(scheduler.run)
            await tg.start(serve, app, sock)
            if config.metrics.listen is not None:
                await tg.start(serve_metrics, metrics, *config.metrics.listen)
            counts = await service.counts()
            notifier.ready(_status_line(counts, scheduler.health()))
            log.info(
                "daemon_ready",
                version=__version__,
                socket=str(daemon_cfg.socket) if not inherited else "inherited",
                state_dir=str(daemon_cfg.state_dir),
                journal=journal.location,
                launcher=config.launcher.type,
                deployments=counts,
                role=leadership.role.value,
                node_id=leadership.node_id,
            )
            tg.start_soon(keep_status_current)
            await tg.start(pruner.run)
    log.info("daemon_stopped")


def leadership_for(config: Config, journal: Journal, runtime: Stack) -> Leadership | Standalone:
    """``Standalone`` on SQLite; on PostgreSQL the lease loop whose terms run the scheduler
    and the webhook delivery (``agentcron.runtime.leadership``)."""
    node = node_id(config.daemon.node_name)
    if config.journal.url is None:
        return Standalone(node)
    # Imported here: asyncpg is loaded only by a daemon that uses it.
    from agentcron.journal.postgres.store import PostgresJournal  # noqa: PLC0415
    from agentcron.runtime.leadership import Leadership  # noqa: PLC0415

    assert isinstance(journal, PostgresJournal)

    async def term() -> None:
        runtime.copies.clear()  # copies kept while following may predate others' changes
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.webhooks.run)
            await tg.start(runtime.scheduler.run)
            await anyio.sleep_forever()

    async def refresh(deployment_ids: Sequence[str]) -> None:
        await runtime.service.refresh(deployment_ids)
        runtime.webhooks.wake_all()  # their events may be among the changes

    return Leadership(
        journal=journal,
        node=node,
        ttl=config.journal.lease_ttl,
        term=term,
        after_term=runtime.firing.reopen,
        refresh=refresh,
    )


def build_pruner(config: Config, runtime: Stack, clock: Clock) -> Pruner:
    """The retention pruner over the stack's journal: session logs live in the state
    directory with the ``command`` launcher; it yields to the fire path (``fires_busy``)."""
    sessions_dir = (
        config.daemon.state_dir / "sessions" if config.launcher.type == "command" else None
    )
    return Pruner(
        journal=runtime.journal,
        clock=clock,
        config=config.retention,
        sessions_dir=sessions_dir,
        busy=fires_busy(runtime, clock),
    )


def fires_busy(runtime: Stack, clock: Clock, *, ahead: float = 2.0) -> Callable[[], bool]:
    """Whether the fire path has work now: fires in flight, or one due within ``ahead``
    seconds (what the pruner yields to)."""
    firing, scheduler = runtime.firing, runtime.scheduler

    def busy() -> bool:
        if firing.stats.in_flight > 0:
            return True
        next_fire = scheduler.next_fire_at()
        return next_fire is not None and (next_fire - clock.now()).total_seconds() < ahead

    return busy


async def open_sessions(
    config: Config, journal: Journal, launcher: Launcher, clock: Clock
) -> Sessions:
    """What ``/v1/sessions`` serves. With the ``command`` launcher, the sessions this host's
    previous daemon left recorded as running are ended first (``recovered``): no daemon can
    see their end any more."""
    if not isinstance(launcher, CommandLauncher):
        return HostedSessions(config.launcher.managed_agents.base_url)
    recovered = await journal.recover_sessions(host=launcher.host, ended_at=clock.now())
    if recovered:
        log.warning(
            "sessions_recovered",
            count=len(recovered),
            host=launcher.host,
            session_ids=recovered[:20],
        )
    return LocalSessions(journal=journal, launcher=launcher)


def reload(
    read: Callable[[], Config],
    launcher: Launcher,
    environ: Mapping[str, str],
    *,
    pruner: Pruner | None = None,
) -> None:
    """SIGHUP: re-read the config; apply launcher declarations, the log level and
    ``[retention]``.

    An invalid file is logged and ignored: the daemon keeps its current settings. Declarations
    that would fail at fire time are applied and logged as warnings (``warn_unusable``).
    """
    try:
        config = read()
    except ConfigError as exc:
        log.error("reload_failed", problems=exc.problems)
        return
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    warn_unusable(config, environ)
    launcher.reload(config.declarations)
    if isinstance(launcher, CommandLauncher):
        launcher.log_max_bytes = config.retention.session_log_max_bytes
    if pruner is not None:
        pruner.reload(config.retention)
    log.info(
        "daemon_reloaded",
        log_level=config.daemon.log_level,
        agents=sorted(config.declarations.agents),
        environments=sorted(config.declarations.environments),
        vaults=sorted(config.declarations.vaults),
    )


def warn_unusable(config: Config, environ: Mapping[str, str]) -> None:
    """Log, one warning each, the declarations that would fail at fire time."""
    for problem in declaration_problems(config, environ):
        key, _, message = problem.partition(": ")
        log.warning("declaration_unusable", key=key, problem=message)


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run ``agentcrond``; ``clock`` replaces the system clock (end-to-end tests shift it)."""
    args = build_parser().parse_args(argv)
    environ = dict(os.environ)
    try:
        config = read_config(args, environ)
    except ConfigError as exc:
        print("agentcrond: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        problems = declaration_problems(config, environ)
        if problems:
            print("agentcrond: the configuration names what sessions cannot use:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_USAGE
        print(json.dumps(effective_settings(config), indent=2))
        return EXIT_OK
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    warn_unusable(config, environ)
    gc.set_threshold(*GC_THRESHOLDS)
    notifier = Notifier(environ)
    try:
        anyio.run(
            lambda: run_daemon(
                config,
                read_config=lambda: read_config(args, environ),
                environ=environ,
                notifier=notifier,
                clock=clock or SystemClock(),
            )
        )
    except KeyboardInterrupt:
        return EXIT_OK
    except BaseException as exc:  # a crash of any part: log why, exit non-zero
        cause = first_leaf(exc)
        if isinstance(cause, AgentcronError):
            log.error("daemon_failed", reason=str(cause))
        else:
            log.error("daemon_crashed", reason=repr(cause), exc_info=cause)
        return EXIT_FAILURE
    finally:
        notifier.close()
    return EXIT_OK


def first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
