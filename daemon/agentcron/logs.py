"""structlog configuration, done once at start: JSON lines for journald, console for a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(level: str, log_format: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog to write to stderr; may be called again (SIGHUP) to change the level."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    printer = structlog.PrintLogger(file=sys.stderr)  # one for every logger: it holds no state
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: printer,
        cache_logger_on_first_use=False,
    )
