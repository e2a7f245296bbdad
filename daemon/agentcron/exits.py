"""Exit codes of both programs, defined once (README "CLI").

``agentcron`` (the client): 0 ok, 1 the API answered with an error (message printed), 2 usage
error, 3 the daemon is not reachable, 130 interrupted. ``agentcrond`` (the daemon): 0 stopped
cleanly, 1 a part failed (the reason is logged), 2 the configuration is invalid.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
"""The client: the API answered with an error. The daemon: a part failed."""
EXIT_USAGE = 2
"""Bad flags or arguments, an invalid expression, an invalid configuration."""
EXIT_UNREACHABLE = 3
"""The client: the daemon's socket is missing or refuses connections."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT), except where following output is the point (``--follow``)."""
