"""`agentcron webhooks` sub-commands: list, deliveries, retry, test."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from agentcron.cli.common import connection_options, run_with_client
from agentcron.cli.output import print_json, table
from agentcron.client import Client
from agentcron.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

ENDPOINT_HEADERS = ("NAME", "STATUS", "URL", "EVENTS", "SINCE")
DELIVERY_HEADERS = ("EVENT", "TYPE", "ENDPOINT", "STATUS", "ATTEMPTS", "NEXT / DONE", "LAST")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `webhooks` sub-commands to the CLI."""
    group = subparsers.add_parser("webhooks", help="webhook endpoints and their deliveries")
    commands = group.add_subparsers(dest="webhooks_command", metavar="COMMAND")
    common = connection_options()

    listing = commands.add_parser(
        "list", parents=[common], help="the configured endpoints and their state"
    )
    listing.set_defaults(handler=_list)

    deliveries = commands.add_parser(
        "deliveries",
        parents=[common],
        help="the outbox, newest event first",
        description="Webhook deliveries, newest event first: pending (with the next attempt), "
        "delivered or failed (given up), with the latest attempt's outcome.",
    )
    deliveries.add_argument("--endpoint", metavar="NAME", help="only this endpoint")
    deliveries.add_argument("--status", choices=("pending", "delivered", "failed"))
    deliveries.add_argument("--limit", type=_positive, default=20, help="at most N (default 20)")
    deliveries.set_defaults(handler=_deliveries)

    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="re-enable an endpoint and retry its failed deliveries now",
        description="Re-enable endpoint NAME (disabled after failing for retry_for) and make "
        "its failed and pending deliveries due now, or only EVENT's with --event.",
    )
    retry.add_argument("name", metavar="NAME")
    retry.add_argument("--event", metavar="EVENT_ID", help="only this event (msg_...)")
    retry.set_defaults(handler=_retry)

    test = commands.add_parser(
        "test",
        parents=[common],
        help="send a signed webhook.test event now",
        description="POST one signed webhook.test event to NAME now and print the outcome "
        "(exit 1 unless it answered 2xx). Not stored, not retried.",
    )
    test.add_argument("name", metavar="NAME")
    test.set_defaults(handler=_test)
    group.set_defaults(handler=lambda _args: _help(group))


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 100, got {text!r}")
    return int(text)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _endpoint_row(endpoint: Mapping[str, Any]) -> list[str]:
    since = endpoint.get("disabled_at") or endpoint.get("failing_since") or ""
    return [
        str(endpoint.get("name", "")),
        str(endpoint.get("status", "")),
        str(endpoint.get("url", "")),
        ",".join(endpoint.get("events") or []),
        str(since),
    ]


def _delivery_row(delivery: Mapping[str, Any]) -> list[str]:
    when = delivery.get("next_attempt_at") or delivery.get("delivered_at") or ""
    last = delivery.get("last_error") or (
        str(delivery["last_status_code"]) if delivery.get("last_status_code") else ""
    )
    return [
        str(delivery.get("event_id", "")),
        str(delivery.get("event_type", "")),
        str(delivery.get("endpoint", "")),
        str(delivery.get("status", "")),
        str(delivery.get("attempts", 0)),
        str(when),
        str(last),
    ]


def _list(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        page = await client.list_webhooks()
        if args.json:
            print_json(page["data"])
        elif not page["data"]:
            print("no webhooks are configured ([[webhooks]] in the daemon's config)")
        else:
            print(table(ENDPOINT_HEADERS, (_endpoint_row(e) for e in page["data"])))
        return EXIT_OK

    return run_with_client(args, command)


def _deliveries(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        page = await client.list_webhook_deliveries(
            endpoint=args.endpoint, status=args.status, limit=args.limit
        )
        if args.json:
            print_json(page["data"])
        else:
            print(table(DELIVERY_HEADERS, (_delivery_row(d) for d in page["data"])))
        return EXIT_OK

    return run_with_client(args, command)


def _retry(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        result = await client.retry_webhook(args.name, event_id=args.event)
        if args.json:
            print_json(result)
        else:
            print(f"{result['endpoint']}: enabled; {result['retried']} deliveries due now")
        return EXIT_OK

    return run_with_client(args, command)


def _test(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        result = await client.test_webhook(args.name)
        if args.json:
            print_json(result)
        elif result["delivered"]:
            print(
                f"{result['endpoint']}: delivered {result['event_id']} "
                f"(HTTP {result['status_code']}, {result['duration_ms']:.1f} ms)"
            )
        else:
            print(f"{result['endpoint']}: not delivered: {result['error']}")
        return EXIT_OK if result["delivered"] else EXIT_FAILURE

    return run_with_client(args, command)
