"""The leadership lease on a real PostgreSQL server (``agentcron.journal.postgres.lease``) and
the lease loop over it (``agentcron.runtime.leadership``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest

from agentcron.core.models import TriggerType
from agentcron.errors import ServiceUnavailable
from agentcron.journal.postgres.lease import LeaseLink
from agentcron.journal.postgres.store import PostgresJournal
from agentcron.runtime.leadership import Leadership
from tests.journal.test_contract import AGENT, T0, make_deployment


@asynccontextmanager
async def links(
    url: str, *holders: str, ttl: float = 30.0, **callbacks: Callable[..., None]
) -> AsyncIterator[list[LeaseLink]]:
    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url)

    opened = []
    try:
        for holder in holders:
            link = LeaseLink(
                connect,
                holder=holder,
                ttl=ttl,
                on_change=callbacks.get("on_change", lambda *_: None),
                on_release=callbacks.get("on_release", lambda: None),
                on_lost=callbacks.get("on_lost", lambda: None),
            )
            await link.open()
            opened.append(link)
        yield opened
    finally:
        for link in opened:
            await link.aclose()


async def expire(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE leases SET expires_at = now() - interval '1 second'")
    finally:
        await conn.close()


async def test_the_first_taker_holds_the_lease_and_each_takeover_is_a_new_epoch(
    postgres_url: str,
) -> None:
    """A takes epoch 1; B cannot while it is valid and sees who holds it and until when (by
    the database's clock); A renews; once expired B takes epoch 2 and A's renewal finds it
    gone; A may come back only after B's lease expires, at epoch 3."""
    async with PostgresJournal.open(postgres_url):  # migrates
        pass
    async with links(postgres_url, "a:1", "b:2") as (a, b):
        taken, view = await a.acquire(None)
        assert taken
        assert (view.holder, view.epoch) == ("a:1", 1)
        assert 29 < view.remaining() <= 30
        taken, seen = await b.acquire(None)
        assert not taken
        assert (seen.holder, seen.epoch) == ("a:1", 1)
        renewed = await a.renew(1, within=5)
        assert renewed is not None
        assert renewed.expires_at is not None
        assert view.expires_at is not None
        assert renewed.expires_at >= view.expires_at
        assert await b.renew(1, within=5) is None  # not its lease
        await expire(postgres_url)
        taken, view = await b.acquire(None)
        assert taken
        assert (view.holder, view.epoch) == ("b:2", 2)
        assert await a.renew(1, within=5) is None
        taken, _ = await a.acquire(1)  # its old epoch does not let it back in
        assert not taken
        await expire(postgres_url)
        taken, view = await a.acquire(1)
        assert taken
        assert view.epoch == 3


async def test_a_daemon_that_stepped_down_takes_its_own_lease_back_at_a_new_epoch(
    postgres_url: str,
) -> None:
    """Still unexpired and still its own at the epoch it knows: taken back at once (epoch + 1);
    another process with the same holder name but no epoch must wait for the expiry."""
    async with PostgresJournal.open(postgres_url):
        pass
    async with links(postgres_url, "same:1", "same:1") as (first, restarted):
        assert (await first.acquire(None))[0]
        assert not (await restarted.acquire(None))[0]
        taken, view = await first.acquire(1)
        assert taken
        assert view.epoch == 2


async def test_racing_followers_take_an_expired_lease_exactly_once(postgres_url: str) -> None:
    async with PostgresJournal.open(postgres_url):
        pass
    holders = [f"n{i}:1" for i in range(8)]
    async with links(postgres_url, *holders) as racing:
        assert (await racing[0].acquire(None))[0]
        for _ in range(5):
            await expire(postgres_url)
            results = await asyncio.gather(*(link.acquire(None) for link in racing))
            winners = [view for taken, view in results if taken]
            assert len(winners) == 1
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await conn.fetchval("SELECT epoch FROM leases") == 6
        finally:
            await conn.close()


async def test_a_release_expires_the_lease_now_and_wakes_the_followers(postgres_url: str) -> None:
    async with PostgresJournal.open(postgres_url):
        pass
    woken = anyio.Event()
    async with links(postgres_url, "a:1", "b:2", on_release=woken.set) as (a, b):
        assert (await a.acquire(None))[0]
        assert not await a.release(7)  # not held at that epoch: nothing changes
        assert not (await b.acquire(None))[0]
        assert await a.release(1)
        with anyio.fail_after(5):
            await woken.wait()
        taken, view = await b.acquire(None)
        assert taken
        assert view.epoch == 2


async def test_a_change_is_notified_in_its_transaction_with_the_node_that_made_it(
    postgres_url: str,
) -> None:
    heard: list[tuple[str, str]] = []
    arrived = anyio.Event()

    def on_change(node: str, deployment_id: str) -> None:
        heard.append((node, deployment_id))
        arrived.set()

    async with (
        PostgresJournal.open(postgres_url) as journal,
        links(postgres_url, "listener:1", on_change=on_change),
    ):
        journal.attach_leadership("maker:9", lambda: pytest.fail("no scheduled claim"))
        deployment = make_deployment()
        await journal.insert_deployment(deployment)
        with anyio.fail_after(5):
            await arrived.wait()
        assert heard == [("maker:9", deployment.id)]
        # A manual claim is not fenced (it has no occurrence that could run twice).
        run = await journal.claim_run(
            deployment_id=deployment.id,
            agent=AGENT,
            trigger_type=TriggerType.MANUAL,
            scheduled_at=None,
            claimed_at=T0,
        )
        assert run is not None


async def test_the_lease_loop_leads_fences_its_claims_and_steps_down_when_taken_over(
    postgres_url: str,
) -> None:
    """``Leadership``: leads when the lease is free (its term runs), fences scheduled claims
    with its epoch, steps down the moment a renewal finds the lease taken (its term is
    cancelled, scheduled claims refused before reaching the database), and follows."""
    terms: list[str] = []
    ended = anyio.Event()

    async with PostgresJournal.open(postgres_url) as journal:
        deployment = make_deployment()
        await journal.insert_deployment(deployment)

        async def term() -> None:
            terms.append("began")
            try:
                await anyio.sleep_forever()
            finally:
                terms.append("ended")

        async def refresh(_: Any) -> None:
            return None

        leadership = Leadership(
            journal=journal,
            node="solo:1",
            ttl=1.5,
            term=term,
            after_term=ended.set,
            refresh=refresh,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(leadership.run)
            assert leadership.role == "leader"
            status = leadership.status()
            assert status["leader_id"] == "solo:1"
            assert status["epoch"] == 1
            claim = await journal.claim_run(
                deployment_id=deployment.id,
                agent=AGENT,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=T0,
                claimed_at=T0,
            )
            assert claim is not None
            conn = await asyncpg.connect(postgres_url)
            try:
                assert await conn.fetchval("SELECT epoch FROM runs") == 1
                await conn.execute(
                    "UPDATE leases SET holder = 'thief:2', epoch = 2, "
                    "expires_at = now() + interval '1 hour'"
                )
                with anyio.fail_after(5):
                    await ended.wait()
                assert leadership.role == "follower"
                with pytest.raises(ServiceUnavailable, match="not the leader"):
                    await journal.claim_run(
                        deployment_id=deployment.id,
                        agent=AGENT,
                        trigger_type=TriggerType.SCHEDULE,
                        scheduled_at=T0.replace(hour=13),
                        claimed_at=T0,
                    )
                assert await conn.fetchval("SELECT count(*) FROM runs") == 1
            finally:
                await conn.close()
            tg.cancel_scope.cancel()
    assert terms == ["began", "ended"]
