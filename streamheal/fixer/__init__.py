"""The queue of open violations and the single fixer that repairs them."""

from __future__ import annotations

from streamheal.fixer._apply import apply_plan, new_fix_id, supports_transactions
from streamheal.fixer._fixer import Fixer
from streamheal.fixer._queue import EntryStatus, Offer, QueueEntry, ViolationQueue
from streamheal.fixer._records import BACKUPS, FIXES
from streamheal.fixer._undo import list_fixes, recover_interrupted_fixes, rollback_fix


__all__ = [
    "BACKUPS",
    "FIXES",
    "EntryStatus",
    "Fixer",
    "Offer",
    "QueueEntry",
    "ViolationQueue",
    "apply_plan",
    "list_fixes",
    "new_fix_id",
    "recover_interrupted_fixes",
    "rollback_fix",
    "supports_transactions",
]
