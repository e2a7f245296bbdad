"""How the CLI shows things: aligned tables and detail views for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO


def print_json(value: object, *, stream: TextIO | None = None, compact: bool = False) -> None:
    """Print ``value`` as JSON (indented, or one line with ``compact`` for JSON lines)."""
    out = stream or sys.stdout
    if compact:
        out.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    out.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Rows under headers, each column as wide as its widest cell."""
    all_rows = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in all_rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def deployment_state(deployment: Mapping[str, Any]) -> str:
    """``archived``, ``paused (manual)``, ``paused (error: <type>)`` or ``active``."""
    if deployment.get("archived_at"):
        return "archived"
    reason = deployment.get("paused_reason")
    if isinstance(reason, dict):
        if reason.get("type") == "error":
            error = reason.get("error") or {}
            return f"paused (error: {error.get('type', '?')})"
        return "paused (manual)"
    return str(deployment.get("status", "?"))


def schedule_text(deployment: Mapping[str, Any]) -> str:
    schedule = deployment.get("schedule")
    if not isinstance(schedule, dict):
        return "manual only"
    return f"{schedule.get('expression')} ({schedule.get('timezone')})"


def next_fire_text(deployment: Mapping[str, Any]) -> str:
    """When it fires next; ``paused`` while paused (the API still lists the upcoming instants,
    but none fires until it is unpaused); ``-`` when archived or manual-only."""
    schedule = deployment.get("schedule")
    if not isinstance(schedule, dict) or deployment.get("archived_at"):
        return "-"
    if deployment.get("status") == "paused":
        return "paused"
    if schedule.get("upcoming_runs_at"):
        return str(schedule["upcoming_runs_at"][0])
    return "-"


def agent_text(agent: object) -> str:
    if isinstance(agent, dict):
        return f"{agent.get('id')} v{agent.get('version')}"
    return "-"


DEPLOYMENT_HEADERS = ("ID", "NAME", "STATE", "SCHEDULE", "NEXT RUN (UTC)", "AGENT")


def deployment_row(deployment: Mapping[str, Any]) -> list[str]:
    return [
        str(deployment.get("id")),
        str(deployment.get("name")),
        deployment_state(deployment),
        schedule_text(deployment),
        next_fire_text(deployment),
        agent_text(deployment.get("agent")),
    ]


def deployment_detail(deployment: Mapping[str, Any]) -> str:
    """A deployment as ``key: value`` lines."""
    schedule = deployment.get("schedule")
    fields: list[tuple[str, str]] = [
        ("id", str(deployment.get("id"))),
        ("name", str(deployment.get("name"))),
        ("description", str(deployment.get("description") or "-")),
        ("state", deployment_state(deployment)),
        ("agent", agent_text(deployment.get("agent"))),
        ("environment", str(deployment.get("environment_id"))),
        ("schedule", schedule_text(deployment)),
    ]
    if isinstance(schedule, dict):
        fields.append(("last run", str(schedule.get("last_run_at") or "-")))
        upcoming = schedule.get("upcoming_runs_at") or []
        fields.append(("upcoming", ", ".join(upcoming) if upcoming else "-"))
    metadata = deployment.get("metadata") or {}
    fields += [
        ("metadata", ", ".join(f"{k}={v}" for k, v in metadata.items()) or "-"),
        ("vaults", ", ".join(deployment.get("vault_ids") or []) or "-"),
        ("events", str(len(deployment.get("initial_events") or []))),
        ("created", str(deployment.get("created_at"))),
        ("updated", str(deployment.get("updated_at"))),
        ("archived", str(deployment.get("archived_at") or "-")),
    ]
    width = max(len(key) for key, _ in fields)
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in fields)


RUN_HEADERS = ("ID", "DEPLOYMENT", "TRIGGER", "SCHEDULED AT", "RESULT", "CREATED")


def run_row(run: Mapping[str, Any]) -> list[str]:
    trigger = run.get("trigger_context") or {}
    error = run.get("error")
    if isinstance(error, dict):
        result = f"error {error.get('type')}: {error.get('message')}"
    else:
        result = f"session {run.get('session_id')}"
    return [
        str(run.get("id")),
        str(run.get("deployment_id")),
        str(trigger.get("type", "?")),
        str(trigger.get("scheduled_at") or "-"),
        result,
        str(run.get("created_at")),
    ]


def run_line(run: Mapping[str, Any]) -> str:
    """One run on one line (for ``runs list --follow``, where columns cannot be measured)."""
    run_id, deployment_id, trigger, scheduled_at, result, created_at = run_row(run)
    return f"{created_at}  {run_id}  {deployment_id}  {trigger:<8}  {scheduled_at:<20}  {result}"


def run_detail(run: Mapping[str, Any]) -> str:
    run_id, deployment_id, trigger, scheduled_at, result, created_at = run_row(run)
    fields = [
        ("id", run_id),
        ("deployment", deployment_id),
        ("agent", agent_text(run.get("agent"))),
        ("trigger", trigger),
        ("scheduled at", scheduled_at),
        ("result", result),
        ("created", created_at),
    ]
    return "\n".join(f"{key + ':':<13} {value}" for key, value in fields)


def health_text(health: Mapping[str, Any], socket_path: str) -> str:
    """The daemon's health for people."""
    counts = health.get("deployments") or {}
    scheduler = health.get("scheduler") or {}
    failed = scheduler.get("failed") or {}
    lines = [
        f"agentcrond {health.get('version')} ({health.get('status')}) on {socket_path}",
        f"journal:      {health.get('journal')}",
        f"daemon time:  {health.get('now')}",
        "deployments:  " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "-"),
        f"next fire:    {scheduler.get('next_fire_at') or '-'}",
        f"fired:        {scheduler.get('fired', 0)} "
        f"(succeeded {scheduler.get('succeeded', 0)}, missed {scheduler.get('missed', 0)}, "
        f"in flight {scheduler.get('in_flight', 0)})",
        "failed:       " + (", ".join(f"{k} {v}" for k, v in failed.items()) or "none"),
    ]
    lines.extend(retention_lines(health.get("retention")))
    for reason in health.get("reasons") or []:
        lines.append(f"degraded:     {reason.get('type')}: {reason.get('message')}")
    lines.extend(leadership_lines(health.get("leadership")))
    return "\n".join(lines)


def leadership_lines(leadership: Mapping[str, Any] | None) -> list[str]:
    """The role lines of ``agentcron status`` (none from a daemon that does not say)."""
    if not leadership:
        return []
    lines = [f"role:         {leadership.get('role')} (this daemon: {leadership.get('node_id')})"]
    if leadership.get("role") != "standalone":
        lines.append(
            f"leader:       {leadership.get('leader_id') or 'none'}, epoch "
            f"{leadership.get('epoch') if leadership.get('epoch') is not None else '-'}, "
            f"lease expires {leadership.get('lease_expires_at') or '-'}"
        )
    return lines


def session_active(session: Mapping[str, Any]) -> str:
    """``running since T``, ``exited (code=0) at T``, ``killed (signal=SIGTERM) at T`` or
    ``unknown at T`` (systemctl's ``Active:`` line)."""
    status = str(session.get("status", "?"))
    if status == "running":
        stopping = session.get("stopping")
        suffix = f" (stopping: {stopping})" if stopping else ""
        return f"running since {session.get('started_at')}{suffix}"
    detail = ""
    if session.get("exit_code") is not None:
        detail = f" (code={session['exit_code']})"
    elif session.get("signal"):
        detail = f" (signal={session['signal']})"
    return f"{status}{detail} at {session.get('ended_at')}"


def session_detail(session: Mapping[str, Any]) -> str:
    """A local session as systemctl shows a unit: a status dot, then ``key: value`` lines."""
    running = session.get("status") == "running"
    log_bytes = session.get("log_bytes")
    fields = [
        ("Active", session_active(session)),
        ("Reason", str(session.get("end_reason") or "-")),
        ("Main PID", f"{session.get('pid')}" + ("" if running else " (ended)")),
        ("Started", str(session.get("started_at"))),
        ("Deployment", str(session.get("deployment_id"))),
        ("Run", str(session.get("run_id"))),
        ("Host", str(session.get("host") or "-")),
        ("Log", "-" if log_bytes is None else f"{log_bytes} bytes"),
    ]
    width = max(len(key) for key, _ in fields)
    dot = "●" if running else "○"
    lines = [f"{dot} {session.get('id')} - {session.get('status')}"]
    lines += [f"  {key + ':':>{width + 1}} {value}" for key, value in fields]
    return "\n".join(lines)


def human_bytes(size: int | None) -> str:
    """``1.5 MiB``-style sizes (``-`` for unknown)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def retention_lines(retention: Mapping[str, Any] | None) -> list[str]:
    """The journal's size, the session logs' bytes and the latest prune, for people."""
    if not retention:
        return []
    lines = [
        f"journal size: {human_bytes(retention.get('journal_bytes'))}, "
        f"session logs {human_bytes(retention.get('session_log_bytes'))}"
    ]
    last = retention.get("last_prune")
    if not last:
        lines.append("last prune:   - (none since start)")
        return lines
    removed = last.get("removed") or {}
    text = (
        f"last prune:   {last.get('finished_at') or last.get('started_at')}: removed "
        f"{removed.get('runs', 0)} runs, {removed.get('sessions', 0)} sessions "
        f"({removed.get('log_files', 0)} log files), "
        f"{removed.get('outbox_events', 0)} webhook events"
    )
    if last.get("error"):
        text += f"; stopped: {last['error']}"
    lines.append(text)
    return lines
