"""The pure core: cron, schedules, jitter, time, models, wire shapes, validation, cursors.

Nothing here does I/O, reads a clock, sleeps or logs: every function takes what it needs
(``now`` included) as arguments. A test keeps it that way.
"""
