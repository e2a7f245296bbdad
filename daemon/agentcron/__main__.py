"""`python -m agentcron` runs the client CLI."""

from agentcron.cli import main

raise SystemExit(main())
