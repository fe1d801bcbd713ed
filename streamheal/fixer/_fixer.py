"""The single fixer: one violation at a time, carefully.

For each violation it re-checks against the data as it is now, plans, holds
big plans for a person, then backs up, applies and records the fix (one
transaction where possible) and pauses for the fix delay. Cancellation stops
it between fixes; a fix in progress is never left half-written because its
writes commit together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from streamheal._bson import to_json_value
from streamheal._events import EventLog
from streamheal.errors import FixConflictError, FixError
from streamheal.fixer._apply import (
    FIXES,
    apply_plan,
    audit_record,
    new_fix_id,
)
from streamheal.fixer._queue import EntryStatus, QueueEntry, ViolationQueue
from streamheal.rules import COMMENT, Database, FixPlan, Rule
from streamheal.state import MonitorState, describe_violation


IDLE_WAIT_S = 5.0
RETRY_BASE_S = 1.0


class Fixer:
    """Takes violations from the queue in order and repairs them one by one."""

    def __init__(
        self,
        client: AsyncMongoClient[Any],
        db: Database,
        rules: Mapping[str, Rule],
        queue: ViolationQueue,
        state: MonitorState,
        *,
        fix_delay_s: float,
        max_docs_per_fix: int,
        max_attempts: int,
        backup: bool,
        use_transaction: bool,
    ) -> None:
        self.client = client
        self.db = db
        self.rules = rules
        self.queue = queue
        self.state = state
        self.fix_delay_s = fix_delay_s
        self.max_docs_per_fix = max_docs_per_fix
        self.max_attempts = max_attempts
        self.backup = backup
        self.use_transaction = use_transaction
        self.events = EventLog(state, "fixer")
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.fixable = {name for name, rule in rules.items() if rule.mode != "detect"}

    # Actions a person takes from the dashboard or the API.

    def pause(self) -> None:
        self._resumed.clear()
        self.state.paused = True
        self.state.fixer_status = "paused"
        self.state.touch()

    def resume(self) -> None:
        self._resumed.set()
        self.state.paused = False
        self.state.fixer_status = "idle"
        self.queue.notify()
        self.state.touch()

    def approve(self, violation_id: str) -> bool:
        entry = self.queue.get(violation_id)
        if entry is None or entry.status is not EntryStatus.HELD:
            return False
        entry.status = EntryStatus.APPROVED
        self.queue.notify()
        return True

    def skip(self, violation_id: str) -> bool:
        entry = self.queue.get(violation_id)
        if entry is None:
            return False
        entry.status = EntryStatus.SKIPPED
        self.state.touch()
        return True

    # The loop.

    async def run(self) -> None:
        """Fix until cancelled; each pass handles at most one violation."""
        if not self.fixable:
            self.state.fixer_status = "auto-fix off"
            self.state.touch()
            await asyncio.Event().wait()

        while True:
            await self._resumed.wait()
            entry = self.queue.next_ready(self.fixable)
            if entry is None:
                self._set_status("idle")
                retry_at = self.queue.next_retry_at(self.fixable)
                timeout = (
                    IDLE_WAIT_S
                    if retry_at is None
                    else max(0.0, retry_at - time.time())
                )
                await self.queue.wait_changed(min(timeout, IDLE_WAIT_S))
                continue

            worked = await self.fix_one(entry)
            if worked and self.fix_delay_s > 0:
                self._set_status("waiting")
                await asyncio.sleep(self.fix_delay_s)

    async def fix_one(self, entry: QueueEntry) -> bool:
        """Handle one queue entry; return whether it wrote or simulated a fix."""
        rule = self.rules[entry.violation.rule]
        entry.status = EntryStatus.FIXING
        self._set_status("fixing")
        self.state.current_fix = {
            "violation": describe_violation(entry.violation),
            "step": "recheck",
        }
        self.state.touch()
        try:
            return await self._fix_entry(rule, entry)
        except (FixError, PyMongoError) as exc:
            await self._record_failure(rule, entry, exc)
            return False
        finally:
            self.state.current_fix = None
            if entry.status is EntryStatus.FIXING:
                entry.status = EntryStatus.PENDING
            self.state.touch()

    async def _fix_entry(self, rule: Rule, entry: QueueEntry) -> bool:
        violation = await rule.recheck(self.db, entry.violation)
        if violation is None:
            self.queue.remove(entry.id)
            self.events.info(
                "violation_resolved",
                rule=rule.name,
                collection=rule.collection,
                violation_id=entry.id,
                reason="no longer holds at re-check",
            )
            return False
        entry.violation = violation

        await self._step("plan")
        plan = await rule.plan_fix(self.db, violation)
        fields = self._fields(plan)

        if rule.mode == "dry_run":
            return await self._simulate(entry, plan, fields)

        if (
            plan.documents_touched > self.max_docs_per_fix
            and entry.status is not EntryStatus.APPROVED
        ):
            entry.status = EntryStatus.HELD
            self.state.fixer_status = "waiting for approval"
            self.events.warning(
                "fix_held",
                **fields,
                documents=plan.documents_touched,
                limit=self.max_docs_per_fix,
            )
            return False

        fix_id = new_fix_id()
        self.state.current_fix = {
            "violation": describe_violation(violation),
            "fix_id": fix_id,
            "summary": plan.summary,
            "step": "backup",
        }
        self.events.info("fix_started", **fields, fix_id=fix_id)
        started = time.monotonic()
        record = await apply_plan(
            self.client,
            self.db,
            plan,
            fix_id,
            backup=self.backup,
            use_transaction=self.use_transaction,
            on_step=self._step,
        )
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        self.queue.remove(entry.id)
        self.state.record_fix(record)
        self.events.info(
            "fix_applied", **fields, fix_id=fix_id, duration_ms=duration_ms
        )
        return plan.changes_data

    async def _simulate(
        self, entry: QueueEntry, plan: FixPlan, fields: dict[str, Any]
    ) -> bool:
        """Record exactly what a fix would do, and change nothing."""
        if entry.simulated_fingerprint == plan.fingerprint:
            entry.status = EntryStatus.SIMULATED
            return False

        fix_id = new_fix_id()
        record = audit_record(plan, fix_id, "dry_run", "dry_run")
        await self._step("audit")
        await self.db[FIXES].insert_one(record, comment=COMMENT)
        entry.simulated_fingerprint = plan.fingerprint
        entry.status = EntryStatus.SIMULATED
        self.state.record_fix(record)
        self.events.info(
            "fix_simulated",
            **fields,
            fix_id=fix_id,
            operations=to_json_value(record["operations"]),
        )
        return True

    async def _record_failure(
        self, rule: Rule, entry: QueueEntry, exc: Exception
    ) -> None:
        entry.attempts += 1
        entry.last_error = str(exc)
        fields = {
            "rule": rule.name,
            "collection": rule.collection,
            "violation_id": entry.id,
            "attempt": entry.attempts,
            "error": str(exc),
        }
        if isinstance(exc, FixConflictError):
            # The data moved under us: plan again against the new version.
            entry.status = EntryStatus.PENDING
            self.events.warning("fix_conflicted", **fields)
            return

        if entry.attempts >= self.max_attempts:
            entry.status = EntryStatus.FAILED
            record = {
                "_id": new_fix_id(),
                "violation_id": entry.id,
                "rule": rule.name,
                "kind": rule.kind,
                "collection": rule.collection,
                "status": "failed",
                "mode": rule.mode,
                "error": str(exc),
                "attempts": entry.attempts,
            }
            self.state.record_fix(record)
            self.events.error("fix_failed", **fields)
            return

        entry.status = EntryStatus.PENDING
        entry.retry_at = time.time() + RETRY_BASE_S * 2 ** (entry.attempts - 1)
        self.events.warning(
            "fix_retried", **fields, retry_in_s=RETRY_BASE_S * 2 ** (entry.attempts - 1)
        )

    async def _step(self, step: str) -> None:
        if self.state.current_fix is not None:
            self.state.current_fix["step"] = step
            self.state.touch()

    def _set_status(self, status: str) -> None:
        if self.state.paused:
            status = "paused"
        if self.state.fixer_status != status:
            self.state.fixer_status = status
            self.state.touch()

    def _fields(self, plan: FixPlan) -> dict[str, Any]:
        violation = plan.violation
        rule = self.rules[violation.rule]
        return {
            "rule": violation.rule,
            "collection": violation.collection,
            "violation_id": violation.id,
            "document_id": to_json_value(violation.documents[0])
            if violation.documents
            else None,
            "action": plan.action,
            "dry_run": rule.mode == "dry_run",
        }
