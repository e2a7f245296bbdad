"""`agentcron deployments` sub-commands: create, list, get, update, pause, unpause, archive, run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agentcron.cli.common import (
    UsageError,
    connection_options,
    load_body_file,
    run_with_client,
    usage_guard,
)
from agentcron.cli.output import (
    DEPLOYMENT_HEADERS,
    deployment_detail,
    deployment_row,
    print_json,
    run_detail,
    table,
)
from agentcron.client import Client
from agentcron.exits import EXIT_OK

DEFAULT_TIMEZONE = "UTC"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `deployments` sub-commands to the CLI."""
    group = subparsers.add_parser(
        "deployments", help="create and manage deployments", description="Manage deployments."
    )
    commands = group.add_subparsers(dest="deployments_command", metavar="COMMAND")
    common = connection_options()

    create = commands.add_parser(
        "create",
        parents=[common],
        help="create a deployment",
        description="Create a deployment from flags or from a JSON body (--file). Flags given "
        "together with --file override the file's fields.",
    )
    _body_flags(create)
    create.set_defaults(handler=usage_guard(_create))

    update = commands.add_parser(
        "update",
        parents=[common],
        help="update a deployment (only the given fields change)",
        description="Update a deployment; only the given flags are sent. --metadata is a per-key "
        "patch, --vault replaces the list, --no-schedule makes it manual-only.",
    )
    update.add_argument("deployment_id", metavar="ID")
    _body_flags(update)
    update.add_argument("--no-schedule", action="store_true", help="clear the schedule")
    update.add_argument(
        "--remove-metadata", action="append", default=[], metavar="KEY", help="delete a key"
    )
    update.set_defaults(handler=usage_guard(_update))

    listing = commands.add_parser("list", parents=[common], help="list deployments")
    listing.add_argument("--agent", help="only deployments of this agent id")
    listing.add_argument("--status", choices=("active", "paused"))
    listing.add_argument("--include-archived", action="store_true")
    size = listing.add_mutually_exclusive_group()
    size.add_argument("--limit", type=_positive, default=20, help="at most N (default 20)")
    size.add_argument("--all", action="store_true", help="follow every page")
    listing.set_defaults(handler=usage_guard(_list))

    for name, help_text in (
        ("get", "show one deployment"),
        ("pause", "stop scheduled runs (manual runs still work)"),
        ("unpause", "resume from the next occurrence (no backfill)"),
        ("archive", "archive for good (terminal)"),
        ("run", "run now: create one session and print the run"),
    ):
        command = commands.add_parser(name, parents=[common], help=help_text)
        command.add_argument("deployment_id", metavar="ID")
        command.set_defaults(handler=_single(name))
    group.set_defaults(handler=lambda _args: _help(group))


def _body_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", metavar="PATH", help="JSON request body (- for stdin)")
    parser.add_argument("--name")
    parser.add_argument("--description")
    parser.add_argument("--agent", metavar="ID", help="agent id (latest version unless pinned)")
    parser.add_argument("--agent-version", type=_positive, metavar="N", help="pin this version")
    parser.add_argument("--environment", metavar="ID", help="environment id")
    parser.add_argument("--message", metavar="TEXT", help="the opening user message")
    parser.add_argument("--cron", metavar="EXPR", help="5-field cron expression")
    parser.add_argument("--timezone", metavar="TZ", help=f"IANA zone (default {DEFAULT_TIMEZONE})")
    parser.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--vault", action="append", metavar="ID", help="vault id (repeatable)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def body_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The request-body fields the flags give (only those given)."""
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    if args.agent is not None:
        body["agent"] = (
            {"type": "agent", "id": args.agent, "version": args.agent_version}
            if args.agent_version is not None
            else args.agent
        )
    elif args.agent_version is not None:
        raise UsageError("--agent-version needs --agent")
    if args.environment is not None:
        body["environment_id"] = args.environment
    if args.message is not None:
        body["initial_events"] = [
            {"type": "user.message", "content": [{"type": "text", "text": args.message}]}
        ]
    metadata: dict[str, str | None] = {}
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata: expected KEY=VALUE, got {item!r}")
        metadata[key] = value
    for key in getattr(args, "remove_metadata", []):
        metadata[key] = None
    if metadata:
        body["metadata"] = metadata
    if args.vault is not None:
        body["vault_ids"] = list(args.vault)
    return body


def _create(args: argparse.Namespace) -> int:
    body = load_body_file(args.file) if args.file else {}
    body.update(body_from_flags(args))
    if args.cron is not None:
        body["schedule"] = _schedule(args.cron, args.timezone or DEFAULT_TIMEZONE)
    elif args.timezone is not None:
        raise UsageError("--timezone needs --cron")
    missing = [
        flag
        for flag, field in (
            ("--name", "name"),
            ("--agent", "agent"),
            ("--environment", "environment_id"),
            ("--message", "initial_events"),
        )
        if field not in body
    ]
    if missing:
        raise UsageError(f"create needs {', '.join(missing)} (or --file body.json)")

    async def command(client: Client) -> int:
        _show(args, await client.create_deployment(body))
        return EXIT_OK

    return run_with_client(args, command)


def _update(args: argparse.Namespace) -> int:
    body = load_body_file(args.file) if args.file else {}
    body.update(body_from_flags(args))
    if args.no_schedule and (args.cron or args.timezone):
        raise UsageError("--no-schedule cannot be combined with --cron or --timezone")
    if args.no_schedule:
        body["schedule"] = None
    if not body and not (args.cron or args.timezone):
        raise UsageError("update needs at least one field to change (see --help)")

    async def command(client: Client) -> int:
        if args.cron is not None or args.timezone is not None:
            expression, timezone = args.cron, args.timezone
            if expression is None or timezone is None:
                # Change one half of the schedule: keep the other half as it is now.
                current = (await client.get_deployment(args.deployment_id)).get("schedule")
                current = current if isinstance(current, dict) else {}
                if expression is None:
                    expression = current.get("expression")
                    if expression is None:
                        raise UsageError("--timezone needs --cron: the deployment has no schedule")
                timezone = timezone or current.get("timezone") or DEFAULT_TIMEZONE
            body["schedule"] = _schedule(expression, timezone)
        _show(args, await client.update_deployment(args.deployment_id, body))
        return EXIT_OK

    return run_with_client(args, command)


def _schedule(expression: str, timezone: str) -> dict[str, str]:
    return {"type": "cron", "expression": expression, "timezone": timezone}


def _list(args: argparse.Namespace) -> int:
    if args.status and args.include_archived:
        raise UsageError("--status cannot be combined with --include-archived")

    async def command(client: Client) -> int:
        deployments = [
            d
            async for d in client.iter_deployments(
                max_items=None if args.all else args.limit,
                agent_id=args.agent,
                status=args.status,
                include_archived=True if args.include_archived else None,
            )
        ]
        if args.json:
            print_json(deployments)
        else:
            print(table(DEPLOYMENT_HEADERS, (deployment_row(d) for d in deployments)))
        return EXIT_OK

    return run_with_client(args, command)


def _single(action: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        async def command(client: Client) -> int:
            calls = {
                "get": client.get_deployment,
                "pause": client.pause_deployment,
                "unpause": client.unpause_deployment,
                "archive": client.archive_deployment,
                "run": client.run_deployment,
            }
            result = await calls[action](args.deployment_id)
            if args.json:
                print_json(result)
            elif action == "run":
                print(run_detail(result))
            else:
                print(deployment_detail(result))
            return EXIT_OK

        return run_with_client(args, command)

    return handler


def _show(args: argparse.Namespace, deployment: dict[str, Any]) -> None:
    if args.json:
        print_json(deployment)
    else:
        print(deployment_detail(deployment))
