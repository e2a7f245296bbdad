"""The journal: every deployment, claim, run and local session, durably (SPEC §4)."""

from agentcron.journal.sqlite.store import RECOVERED_MESSAGE, Journal

__all__ = ["RECOVERED_MESSAGE", "Journal"]
