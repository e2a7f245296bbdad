"""The journal: every deployment, claim, run and local session, durably (SPEC §4).

``Journal`` (``agentcron.journal.protocol``) is the port the rest of the daemon uses;
``SqliteJournal`` (``agentcron.journal.sqlite``) is the embedded backend.
"""

from agentcron.journal.protocol import (
    RECOVERED_MESSAGE,
    Claim,
    Delivery,
    DeliveryStatus,
    DeploymentFilter,
    EndpointState,
    Journal,
    OutboxEvent,
    RunFilter,
    ScheduleRow,
)
from agentcron.journal.sqlite.store import SqliteJournal

__all__ = [
    "RECOVERED_MESSAGE",
    "Claim",
    "Delivery",
    "DeliveryStatus",
    "DeploymentFilter",
    "EndpointState",
    "Journal",
    "OutboxEvent",
    "RunFilter",
    "ScheduleRow",
    "SqliteJournal",
]
