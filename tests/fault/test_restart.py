"""streamheal is killed with SIGKILL at random points of a busy run and restarted.

The kill points are drawn from a seeded random generator, so a failure
replays the same way: each round kills the process on the n-th occurrence of
one of its log events, while a writer keeps inserting users, every fourth
one without an email (a violation the rule fixes).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from tests.fault._support import applied_fixes_by_document, observed_monitor
from tests.helpers import settings_for, wait_for_state
from tests.process import StreamhealProcess, streamheal_run


RULES = """\
mongodb:
  uri: ${{TEST_MONGODB_URI}}
  database: {database}
engine:
  fix_delay: 0
  auto_fix: true
  dry_run: false
  sweep_interval: 1h
  queue_max: 10000
dashboard:
  port: 0
rules:
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: set_default
    defaults: {{email: unknown@example.com}}
"""
SEED = 4
ROUNDS = 3
KILL_EVENTS = ("violation_detected", "fix_started", "fix_applied")
BAD_EVERY = 4
BAD_WHILE_DOWN = 5  # violating writes made during each outage of streamheal
WRITE_PACE_S = 0.02  # the writer's rate, not a wait for anything


class Writer:
    """Inserts users steadily; remembers which were bad and written while down."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.down = False
        self.bad: list[int] = []
        self.bad_while_down: list[int] = []
        self.enough_while_down = asyncio.Event()
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        number = 0
        while not self.stopped.is_set():
            bad = number % BAD_EVERY == 0
            down = self.down
            await self.db.users.insert_one(
                {"_id": number} if bad else {"_id": number, "email": f"{number}@x"}
            )
            if bad:
                self.bad.append(number)
                if down:
                    self.bad_while_down.append(number)
                    if len(self.bad_while_down) % BAD_WHILE_DOWN == 0:
                        self.enough_while_down.set()
            number += 1
            await asyncio.sleep(WRITE_PACE_S)


async def wait_for_nth(streamheal: StreamhealProcess, event: str, nth: int) -> None:
    after = 0
    for _ in range(nth):
        await streamheal.wait_for(event, after=after)
        after = next(
            index + 1
            for index in range(after, len(streamheal.events))
            if streamheal.events[index].get("event") == event
        )


@pytest.mark.slow
async def test_killed_streamheal_misses_nothing_and_fixes_nothing_twice(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(database=db.name))
    env = {"TEST_MONGODB_URI": mongo_uri}
    chosen = random.Random(SEED)
    writer = Writer(db)
    writing = asyncio.create_task(writer.run())
    kills: list[tuple[str, int]] = []
    try:
        for _ in range(ROUNDS):
            async with streamheal_run(rules, env=env) as streamheal:
                await streamheal.wait_for("sweep_completed")
                kill_at = (chosen.choice(KILL_EVENTS), chosen.randint(1, 4))
                await wait_for_nth(streamheal, *kill_at)
                streamheal.process.kill()
                await streamheal.process.wait()
                kills.append(kill_at)
            writer.down = True
            writer.enough_while_down.clear()
            await asyncio.wait_for(writer.enough_while_down.wait(), 20)
            writer.down = False

        async with streamheal_run(rules, env=env) as streamheal:
            await streamheal.wait_for("sweep_completed")
            writer.stopped.set()
            await writing
            after = 0
            while await db.users.count_documents({"email": {"$exists": False}}):
                await streamheal.wait_for("fix_applied", after=after)
                after = len(streamheal.events)
            code = await streamheal.stop()
    finally:
        writer.stopped.set()
        await asyncio.gather(writing, return_exceptions=True)

    fixes = await applied_fixes_by_document(db)
    assert len(kills) == ROUNDS
    assert code == 0
    assert len(writer.bad_while_down) == ROUNDS * BAD_WHILE_DOWN
    assert fixes == {number: 1 for number in writer.bad}
    assert await db.users.count_documents({"email": "unknown@example.com"}) == len(
        writer.bad
    )


DETECT_RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
"""


async def test_the_stream_resumes_from_the_stored_token(
    db: Any, mongo_uri: str
) -> None:
    """Writes made while streamheal was stopped arrive through the stream itself.

    The start-up sweep would find their violations too, so the test counts
    the writes the stream handled: exactly those made while it was stopped,
    neither fewer (started from now) nor more (started from the beginning).
    """
    settings = settings_for(db.name, DETECT_RULES, "  sweep_interval: 1h")
    async with observed_monitor(mongo_uri, settings) as first:
        await db.users.insert_one({"_id": "before", "email": "a@b"})
        await wait_for_state(first, lambda state: state.stream_batches == 1)
    stored = await db.streamheal_state.find_one({"_id": f"stream:{db.name}"})

    await db.users.insert_many(
        [{"_id": "bad1"}, {"_id": "good1", "email": "c@d"}, {"_id": "bad2"}]
    )

    async with observed_monitor(mongo_uri, settings) as second:
        await wait_for_state(
            second,
            lambda state: (
                state.write_batch_sizes.total >= 3 and state.detected_total == 2
            ),
        )
        handled = second.state.write_batch_sizes.total
        queued = sorted(entry.violation.documents[0] for entry in second.queue)

    assert stored is not None and stored["resume_token"] is not None
    assert handled == 3
    assert queued == ["bad1", "bad2"]
