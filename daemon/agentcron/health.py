"""The daemon's health: ``ok``, or ``degraded`` with the reasons (``/v1/health``,
``agentcron status``, systemd's ``STATUS=``).

Derived from state the daemon keeps anyway, never from a probe of its own:

- ``journal_writes_failing``: the journal's latest write transaction failed (disk full, I/O
  error, a lock); cleared by the next one that commits (``Journal.write_failure``);
- ``launcher_unavailable``: the launcher's latest session creation failed for a cause every
  session shares; cleared by the next session created (``Launcher.unavailable_reason``);
- ``scheduled_runs_failing``: the latest ``RECENT_SCHEDULED_RUNS`` scheduled runs of the
  deployments that still fire (scheduled, not paused, not archived) all failed, read from the
  journal, so a restart does not hide it; one successful scheduled run, or pausing or archiving
  the failing deployments, clears it.

``degraded_reasons`` is the pure decision; ``check_health`` gathers the facts for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from agentcron.journal import Journal
from agentcron.launchers.base import Launcher

RECENT_SCHEDULED_RUNS = 5
"""How many scheduled runs in a row must fail before the daemon says it is degraded."""


class ReasonType(StrEnum):
    JOURNAL_WRITES_FAILING = "journal_writes_failing"
    LAUNCHER_UNAVAILABLE = "launcher_unavailable"
    SCHEDULED_RUNS_FAILING = "scheduled_runs_failing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    """Why the daemon is degraded: a stable ``type`` for scripts and a message for people."""

    type: ReasonType
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"type": self.type.value, "message": self.message}


def degraded_reasons(
    *,
    journal_failure: str | None,
    launcher_problem: str | None,
    recent_scheduled_errors: Sequence[str | None],
    window: int = RECENT_SCHEDULED_RUNS,
) -> list[Reason]:
    """The reasons the daemon is degraded (empty: ``ok``). Pure.

    ``recent_scheduled_errors`` are the error types of the latest scheduled runs, newest first
    (``None`` for a run that created its session).
    """
    reasons: list[Reason] = []
    if journal_failure is not None:
        reasons.append(
            Reason(
                type=ReasonType.JOURNAL_WRITES_FAILING,
                message=f"the journal cannot be written: {journal_failure}",
            )
        )
    if launcher_problem is not None:
        reasons.append(
            Reason(
                type=ReasonType.LAUNCHER_UNAVAILABLE,
                message=f"the launcher cannot start sessions: {launcher_problem}",
            )
        )
    latest = list(recent_scheduled_errors[:window])
    if len(latest) == window and all(error is not None for error in latest):
        counts = Counter(error for error in latest if error is not None)
        by_type = ", ".join(f"{error} x{count}" for error, count in counts.most_common())
        reasons.append(
            Reason(
                type=ReasonType.SCHEDULED_RUNS_FAILING,
                message=f"the last {window} scheduled runs all failed ({by_type})",
            )
        )
    return reasons


async def check_health(
    journal: Journal, launcher: Launcher, *, window: int = RECENT_SCHEDULED_RUNS
) -> list[Reason]:
    """The reasons the daemon is degraded right now (one indexed journal read)."""
    launcher_problem = launcher.unavailable_reason()
    return degraded_reasons(
        journal_failure=journal.write_failure,
        launcher_problem=launcher_problem,
        recent_scheduled_errors=await journal.recent_scheduled_errors(window),
        window=window,
    )
