"""The single fixer: one violation at a time, carefully.

For each violation it re-checks against the data as it is now, plans, holds
big plans for a person, then backs up, applies and records the fix (one
transaction where possible), checks that the fix ended the violation, and
pauses for the fix delay. Cancellation stops it between fixes. A fix in
progress is never left half-written: its writes commit together, or, without
transactions, a fix cut short is undone from its backups when the fixer
starts (`recover_interrupted_fixes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient

from streamheal._bson import to_json_value
from streamheal._events import EventLog
from streamheal.errors import FixConflictError, FixError
from streamheal.fixer._apply import apply_plan, audit_record, new_fix_id
from streamheal.fixer._queue import EntryStatus, QueueEntry, ViolationQueue
from streamheal.fixer._records import BACKUPS, FIXES
from streamheal.fixer._undo import recover_interrupted_fixes
from streamheal.rules import COMMENT, Database, FixPlan, Rule, Violation
from streamheal.state import MonitorState, describe_violation


IDLE_WAIT_S = 5.0
RETRY_BACKOFF_S = 1.0


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
        retry_backoff_s: float = RETRY_BACKOFF_S,
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
        self.retry_backoff_s = retry_backoff_s
        self._fix_id: str | None = None
        self.events = EventLog(state, "fixer")
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._stopping = asyncio.Event()
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
        entry.approved = True
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

    def request_stop(self) -> None:
        """Finish the fix in progress, if any, and start no other."""
        self._stopping.set()
        self.queue.notify()

    async def run(self) -> None:
        """Fix until stopped or cancelled; each pass handles one violation."""
        if not self.fixable:
            self.state.fixer_status = "auto-fix off"
            self.state.touch()
            await self._stopping.wait()
            return

        while not self._stopping.is_set():
            if not self._resumed.is_set():
                await self._wait_for(self._resumed, None)
                continue
            entry = self.queue.next_ready(self.fixable)
            if entry is None:
                self._set_status(self._idle_status())
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
                await self._wait_for(self._stopping, self.fix_delay_s)
        self._set_status("stopped")

    async def _wait_for(self, event: asyncio.Event, timeout_s: float | None) -> None:
        """Wait for `event` or a stop request, at most `timeout_s`."""
        waiters = {
            asyncio.create_task(event.wait()),
            asyncio.create_task(self._stopping.wait()),
        }
        try:
            await asyncio.wait(
                waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _idle_status(self) -> str:
        held = any(entry.status is EntryStatus.HELD for entry in self.queue)
        return "waiting for approval" if held else "idle"

    async def recover(self) -> None:
        """Undo the fixes that a crash cut short.

        Call it before the first sweep: the documents it puts back must be
        there when the sweep looks for violations.
        """
        for record in await recover_interrupted_fixes(self.db):
            self.events.warning(
                "fix_recovered",
                rule=record["rule"],
                collection=record["collection"],
                violation_id=record["violation_id"],
                fix_id=record["_id"],
                action=record["action"],
                undone=record["undone"],
            )

    async def fix_one(self, entry: QueueEntry) -> bool:
        """Handle one queue entry; return whether it wrote or simulated a fix."""
        rule = self.rules[entry.violation.rule]
        entry.status = EntryStatus.FIXING
        self._set_status("simulating" if rule.mode == "dry_run" else "fixing")
        self.state.current_fix = {
            "violation": describe_violation(entry.violation),
            "step": "recheck",
        }
        self.state.touch()
        self._fix_id = None
        try:
            return await self._fix_entry(rule, entry)
        except Exception as exc:
            # A failing fix is that fix's failure, never the fixer's: it is
            # recorded and the fixer moves on. CancelledError is not an
            # Exception, so cancellation still passes.
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

        if plan.documents_touched > self.max_docs_per_fix and not entry.approved:
            entry.status = EntryStatus.HELD
            self.state.fixer_status = "waiting for approval"
            self.events.warning(
                "fix_held",
                **fields,
                documents=plan.documents_touched,
                limit=self.max_docs_per_fix,
            )
            return False

        fix_id = self._fix_id = new_fix_id()
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
        if record.get("backups"):
            self.events.info(
                "backup_written",
                **fields,
                fix_id=fix_id,
                backups=record["backups"],
                backup_collection=BACKUPS,
            )
        # Verified before it is reported, so that the state is whole (the
        # queue included) when the fix_applied line appears.
        remaining = None
        try:
            if plan.changes_data:
                await self._step("verify")
                remaining = await self._recheck_after_fix(rule, violation, fields)
        finally:
            # The fix is written: it is reported even when a stop cancels the
            # check, and then taken as having worked.
            if remaining is None:
                self.queue.remove(entry.id)
            self.state.record_fix(record)
            self.events.info(
                "fix_applied", **fields, fix_id=fix_id, duration_ms=duration_ms
            )
        if remaining is not None:
            self._record_ineffective(rule, entry, remaining, fields)
        return plan.changes_data

    async def _recheck_after_fix(
        self, rule: Rule, violation: Violation, fields: dict[str, Any]
    ) -> Violation | None:
        """The violation as the fixed data shows it, or None when the fix ended it.

        A re-check that fails leaves the question open; the fix is then taken
        to have worked, as it was before this check existed, and the next
        sweep judges the data. Letting the error reach `fix_one` would retry,
        and so repeat, a fix that has already been applied.
        """
        try:
            return await rule.recheck(self.db, violation)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.events.warning(
                "fix_recheck_failed",
                **fields,
                fix_id=self._fix_id,
                error=describe_error(exc),
            )
            return None

    def _record_ineffective(
        self,
        rule: Rule,
        entry: QueueEntry,
        remaining: Violation,
        fields: dict[str, Any],
    ) -> None:
        """Mark a violation that its own fix, just applied, left in place.

        The entry stays in the queue as failed, holding the violation as the
        fixed data shows it: finding that data again is then no change, so the
        fix is not applied over and over (each time with a new backup and
        audit record). A change to the data sends it back to the fixer. The
        applied fix keeps its audit record and can be rolled back.
        """
        entry.violation = remaining
        entry.attempts += 1
        entry.status = EntryStatus.FAILED
        entry.last_error = (
            f"Fix {self._fix_id} was applied but the violation still holds, so "
            f"the rule's fix ({rule.describe_fix()}) does not repair it."
        )
        self.state.record_fix(self._failure_record(rule, entry))
        self.events.error(
            "fix_ineffective",
            rule=fields["rule"],
            collection=fields["collection"],
            violation_id=entry.id,
            document_id=fields["document_id"],
            fix_id=self._fix_id,
            action=fields["action"],
            error=entry.last_error,
        )

    async def _simulate(
        self, entry: QueueEntry, plan: FixPlan, fields: dict[str, Any]
    ) -> bool:
        """Record exactly what a fix would do, and change nothing.

        A plan already recorded (same fingerprint: the same documents, before
        and after) is not recorded again.
        """
        if entry.simulated_fingerprint == plan.fingerprint:
            entry.finish_dry_run(plan.violation, plan.fingerprint)
            return False

        fix_id = self._fix_id = new_fix_id()
        record = audit_record(plan, fix_id, "dry_run", "dry_run")
        await self._step("audit")
        await self.db[FIXES].insert_one(record, comment=COMMENT)
        entry.finish_dry_run(plan.violation, plan.fingerprint)
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
        """Retry the entry later, or give up after the allowed attempts.

        A conflict (the data moved under the fix) is planned again at once; any
        other failure waits `retry_backoff_s`, doubling each time. Both count
        as attempts, so a fix that can never succeed stops.
        """
        entry.attempts += 1
        entry.last_error = describe_error(exc)
        stats = self.state.rule_stats.get(rule.name)
        if stats is not None:
            stats.failed_attempts += 1
            if isinstance(exc, FixConflictError):
                stats.conflicts += 1
        documents = entry.violation.documents
        fields = {
            "rule": rule.name,
            "collection": rule.collection,
            "violation_id": entry.id,
            "document_id": to_json_value(documents[0]) if documents else None,
            "fix_id": self._fix_id,
            "attempt": entry.attempts,
            "error": entry.last_error,
        }
        if entry.attempts >= self.max_attempts:
            entry.status = EntryStatus.FAILED
            entry.gave_up_on_conflict = isinstance(exc, FixConflictError)
            self.state.record_fix(self._failure_record(rule, entry))
            self.events.error("fix_failed", **fields)
            return

        entry.status = EntryStatus.PENDING
        if isinstance(exc, FixConflictError):
            self.events.warning("fix_conflicted", **fields)
            return
        retry_in_s = self.retry_backoff_s * 2 ** (entry.attempts - 1)
        entry.retry_at = time.time() + retry_in_s
        self.events.warning("fix_retried", **fields, retry_in_s=retry_in_s)

    def _failure_record(self, rule: Rule, entry: QueueEntry) -> dict[str, Any]:
        """What the state's recent fixes show of a violation marked failed."""
        return {
            "_id": self._fix_id or new_fix_id(),
            "violation_id": entry.id,
            "rule": rule.name,
            "kind": rule.kind,
            "collection": rule.collection,
            "status": "failed",
            "mode": rule.mode,
            "error": entry.last_error,
            "attempts": entry.attempts,
        }

    async def _step(self, step: str, operation: int | None = None) -> None:
        """Show the step on the state and log it, so it can be watched."""
        if self.state.current_fix is not None:
            self.state.current_fix["step"] = step
            self.state.touch()
        self.events.debug(
            "fix_step_started", fix_id=self._fix_id, step=step, operation=operation
        )

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


def describe_error(exc: Exception) -> str:
    """The reason a fix failed, as one line: a server error keeps its code."""
    code = getattr(exc, "code", None)
    # The server's full reply can hold the whole document: leave it out.
    text = str(exc).split(", full error: ")[0] or type(exc).__name__
    if code is not None and not isinstance(exc, FixError):
        return f"{type(exc).__name__} (code {code}): {text}"
    return text
