"""The queue of open violations and the single fixer that repairs them."""

from __future__ import annotations

from streamheal.fixer._apply import (
    BACKUPS,
    FIXES,
    apply_plan,
    list_fixes,
    recover_interrupted_fixes,
    rollback_fix,
    supports_transactions,
)
from streamheal.fixer._fixer import Fixer
from streamheal.fixer._queue import EntryStatus, Offer, QueueEntry, ViolationQueue


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
    "recover_interrupted_fixes",
    "rollback_fix",
    "supports_transactions",
]
