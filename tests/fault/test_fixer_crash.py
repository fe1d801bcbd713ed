"""Item 6: streamheal killed (SIGKILL) at each step of a fix, then restarted.

The fix is a `unique` rule archiving two duplicates: four writes (copy, delete,
copy, delete) besides the backups and the audit record. streamheal is held at
a step by a `failCommand` fail point that blocks the command of that step,
and killed once its log says it reached the step. After the restart no
document is lost or half-changed, every changed document has its backup, and
the fix is either complete or not applied at all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from bson import decode

from streamheal.embedded import EmbeddedServer
from streamheal.fixer import BACKUPS, FIXES, rollback_fix
from streamheal.monitor import connect
from tests.fault.fixer_support import (
    BLOCK_MS,
    RAW,
    every_bson_type,
    fail_point,
    fixer_worker,
    kill,
    raw_documents,
    wait_for_step,
)
from tests.process import streamheal_run


pytestmark = pytest.mark.slow

RULES = """\
mongodb:
  uri: {uri}
  database: {database}
engine:
  fix_delay: 0
  auto_fix: true
  dry_run: false
  sweep_interval: 1h
  retry_backoff: 50ms
dashboard:
  port: 0
logging:
  file: null
  level: debug
rules:
  - name: one_account_per_email
    kind: unique
    collection: users
    keys: [email]
    keep: oldest
    fix: archive
"""
KEPT = "u1"
# How long after the kill a blocked commit may still land: the block plus slack.
COMMIT_WAIT_S = BLOCK_MS / 1000 + 10
DUPLICATES = ("u2", "u3")


async def seed(db: Any) -> dict[Any, bytes]:
    """Three accounts sharing an email; returns their raw BSON by `_id`."""
    await db.users.insert_many(
        [
            every_bson_type(document_id, "a@example.com")
            for document_id in ("u1", "u2", "u3")
        ]
    )
    return await raw_documents(db, "users")


def write_rules(tmp_path: Path, uri: str, database: str) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(uri=uri, database=database))
    return rules


async def assert_untouched(db: Any, originals: dict[Any, bytes]) -> None:
    """Nothing of the fix is visible: documents as seeded, no backup, no record."""
    assert await raw_documents(db, "users") == originals
    assert await db.users_duplicates.count_documents({}) == 0
    assert await db[BACKUPS].count_documents({}) == 0
    assert await db[FIXES].count_documents({}) == 0


async def assert_fixed_once(
    db: Any, originals: dict[Any, bytes], *, interrupted: int = 0
) -> dict[str, Any]:
    """The fix is complete, exactly once; returns its audit record."""
    applied = await db[FIXES].find({"status": "applied"}).to_list()
    assert len(applied) == 1
    assert await db[FIXES].count_documents({}) == 1 + interrupted
    assert await db[FIXES].count_documents({"status": "interrupted"}) == interrupted
    fix_id = applied[0]["_id"]

    assert await raw_documents(db, "users") == {KEPT: originals[KEPT]}
    archived = (
        await db.users_duplicates.find({}, {"_streamheal": 0}).sort("_id").to_list()
    )
    assert [copy["_id"] for copy in archived] == list(DUPLICATES)
    backups = (
        await db.get_collection(BACKUPS, codec_options=RAW)
        .find({"fix_id": fix_id})
        .to_list()
    )
    assert {b["document_id"]: b["document"].raw for b in backups} == {
        document_id: originals[document_id] for document_id in DUPLICATES
    }
    assert await db[BACKUPS].count_documents({}) == 2 * (1 + interrupted)
    return applied[0]


async def assert_rollback_is_exact(
    uri: str, db: Any, fix_id: str, originals: dict[Any, bytes], *, transaction: bool
) -> None:
    client, _ = await connect(uri)
    try:
        await rollback_fix(client, client[db.name], fix_id, use_transaction=transaction)
    finally:
        await client.close()
    assert await raw_documents(db, "users") == originals
    assert await db.users_duplicates.count_documents({}) == 0


# Where streamheal is held: the blocked command, how many of its kind pass
# first, and the step (and write) the fixer logs just before sending it.
# In the transaction the commands are: find u2, find u3, insert backups,
# insert copy of u2, delete u2, insert copy of u3, delete u3, insert audit
# record, commitTransaction.
TRANSACTION_STEPS = {
    "after_backup": ("insert", 1, "apply", 0),
    "mid_apply": ("delete", 1, "apply", 3),
    "before_audit": ("insert", 3, "audit", None),
}


class TestCrashInATransaction:
    @pytest.mark.parametrize("where", sorted(TRANSACTION_STEPS))
    async def test_a_fix_killed_before_commit_is_not_applied_then_done_once(
        self, db: Any, mongo_client: Any, mongo_uri: str, tmp_path: Path, where: str
    ) -> None:
        command, skip, step, operation = TRANSACTION_STEPS[where]
        originals = await seed(db)
        rules = write_rules(tmp_path, "${TEST_MONGODB_URI}", db.name)
        env = {"TEST_MONGODB_URI": mongo_uri}

        async with fail_point(mongo_client, [command], skip=skip, block_ms=BLOCK_MS):
            async with streamheal_run(rules, env=env) as streamheal:
                await wait_for_step(streamheal, step, operation)
                await kill(streamheal)
            await assert_untouched(db, originals)

        # The killed process's transaction is still open on the server, holding
        # its writes; mongod aborts it after transactionLifetimeLimitSeconds
        # (60 s). The test ends it at once the way an operator would. SecantusDB
        # ignores killAllSessions' user filter and ends every session, which
        # here is only the dead process's.
        await mongo_client.admin.command({"killAllSessions": []})
        await assert_untouched(db, originals)

        async with streamheal_run(rules, env=env) as streamheal:
            applied = await streamheal.wait_for("fix_applied")
        record = await assert_fixed_once(db, originals)
        assert applied["fix_id"] == record["_id"]

        await assert_rollback_is_exact(
            mongo_uri, db, record["_id"], originals, transaction=True
        )

    async def test_a_fix_killed_during_commit_is_complete_or_absent(
        self, db: Any, mongo_client: Any, mongo_uri: str, tmp_path: Path
    ) -> None:
        """A commit sent just before the kill lands whole or not at all.

        Whether the server still runs a commit whose client has died is the
        server's business (SecantusDB sometimes does, sometimes aborts it), so
        the test accepts both outcomes, and requires the one it sees to be
        all-or-nothing and the restarted streamheal to finish the job once.
        """
        originals = await seed(db)
        rules = write_rules(tmp_path, "${TEST_MONGODB_URI}", db.name)
        env = {"TEST_MONGODB_URI": mongo_uri}

        async with await db[FIXES].watch() as records:
            async with fail_point(
                mongo_client, ["commitTransaction"], block_ms=BLOCK_MS
            ):
                async with streamheal_run(rules, env=env) as streamheal:
                    await wait_for_step(streamheal, "commit")
                    await kill(streamheal)
                try:
                    await asyncio.wait_for(records.next(), COMMIT_WAIT_S)
                    committed = True
                except TimeoutError:
                    committed = False

        if committed:
            record = await assert_fixed_once(db, originals)
        else:
            await mongo_client.admin.command({"killAllSessions": []})
            await assert_untouched(db, originals)

        async with streamheal_run(rules, env=env) as streamheal:
            await streamheal.wait_for("sweep_completed")
            if not committed:
                await streamheal.wait_for("fix_applied")
        record = await assert_fixed_once(db, originals)

        await assert_rollback_is_exact(
            mongo_uri, db, record["_id"], originals, transaction=True
        )


@pytest.fixture(scope="module")
def standalone_uri() -> Any:
    """A server without transactions (and without change streams)."""
    server = EmbeddedServer(extra_args=["--standalone", "--enable-test-commands"])
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture
async def standalone_db(standalone_uri: str, database_name: str) -> Any:
    client, _ = await connect(standalone_uri)
    yield client[database_name]
    await client.drop_database(database_name)
    await client.close()


# Without a transaction: insert the `applying` record, insert backups,
# insert copy of u2, delete u2, insert copy of u3, delete u3, update the
# record to `applied`. The held command fails after its block (errorCode), so
# the write the dead process had sent never lands; `undone` is how many of
# the fix's writes recovery has to take back.
STANDALONE_STEPS = {
    "after_backup": ("insert", 2, "apply", 0, 0),
    "mid_apply": ("delete", 1, "apply", 3, 3),
    "before_audit": ("update", 0, "audit", None, 4),
}
NOT_EXECUTED = 2  # BadValue: the held command is answered with an error


class TestCrashWithoutTransactions:
    @pytest.mark.parametrize("where", sorted(STANDALONE_STEPS))
    async def test_a_fix_cut_short_is_undone_at_start_then_done_once(
        self, standalone_db: Any, standalone_uri: str, tmp_path: Path, where: str
    ) -> None:
        command, skip, step, operation, undone = STANDALONE_STEPS[where]
        db = standalone_db
        originals = await seed(db)
        rules = write_rules(tmp_path, standalone_uri, db.name)

        async with fail_point(
            db.client, [command], skip=skip, block_ms=BLOCK_MS, error_code=NOT_EXECUTED
        ):
            async with fixer_worker(rules) as worker:
                started = await worker.wait_for("fix_started")
                await wait_for_step(worker, step, operation)
                await kill(worker)

            # Half a fix is visible: the record says `applying`, the backups
            # are complete, and `undone` writes reached the documents.
            record = await db[FIXES].find_one({})
            assert record["status"] == "applying"
            assert record["_id"] == started["fix_id"]
            assert await db[BACKUPS].count_documents({}) == 2
            stored = {
                b["document_id"]: decode(b["document"].raw)
                for b in await db.get_collection(BACKUPS, codec_options=RAW)
                .find({})
                .to_list()
            }
            assert stored.keys() == set(DUPLICATES)
            moved = await db.users_duplicates.count_documents({})
            gone = 3 - await db.users.count_documents({})
            assert moved + gone == undone

        async with fixer_worker(rules) as worker:
            recovered = await worker.wait_for("fix_recovered")
            applied = await worker.wait_for("fix_applied")
        assert recovered["fix_id"] == started["fix_id"]
        assert recovered["undone"] == undone

        interrupted = await db[FIXES].find_one({"_id": started["fix_id"]})
        assert interrupted["status"] == "interrupted"
        assert interrupted["undone"] == undone
        record = await assert_fixed_once(db, originals, interrupted=1)
        assert applied["fix_id"] == record["_id"]

        await assert_rollback_is_exact(
            standalone_uri, db, record["_id"], originals, transaction=False
        )
