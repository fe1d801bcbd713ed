"""Which database errors are worth waiting out, and which end a resume point.

One small table per decision, so the stream watcher, the monitor and the
fixer decide the same way.
https://github.com/mongodb/specifications/blob/master/source/change-streams/change-streams.md#resumable-error
"""

from __future__ import annotations

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError


# Server error codes meaning the stored resume point cannot be used again.
# 286 ChangeStreamHistoryLost; 280 ChangeStreamFatalError (the token's event
# is gone); 260 InvalidResumeToken. SecantusDB sends 286 as MongoDB does.
HISTORY_LOST_CODES = frozenset({286, 280, 260})
# 10334 BSONObjectTooLarge: one change event is over 16 MB as delivered.
TOO_LARGE_CODES = frozenset({10334})
# Error labels and codes that say "the same request may work a moment later".
# https://github.com/mongodb/specifications/blob/master/source/change-streams/change-streams.md#resumable-error
TRANSIENT_LABELS = frozenset(
    {"ResumableChangeStreamError", "RetryableWriteError", "TransientTransactionError"}
)
TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        63,  # StaleShardVersion
        150,  # StaleEpoch
        13388,  # StaleConfig
        234,  # RetryChangeStream
        133,  # FailedToSatisfyReadPreference
    }
)


def is_history_lost(exc: PyMongoError) -> bool:
    """Whether resuming from our token can never work again."""
    return isinstance(exc, OperationFailure) and exc.code in HISTORY_LOST_CODES


def is_too_large(exc: PyMongoError) -> bool:
    """Whether the server could not deliver one change event for its size."""
    return isinstance(exc, OperationFailure) and exc.code in TOO_LARGE_CODES


def is_transient(exc: BaseException) -> bool:
    """Whether an error is the connection's or the moment's, not the request's.

    Such an error must not count against a rule or drop a batch of change
    events: the batch is read again from the last handled resume token.
    """
    if isinstance(exc, ConnectionFailure):
        return True
    if not isinstance(exc, OperationFailure):
        return False
    if any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    return exc.code in TRANSIENT_CODES
