"""The one decision of which errors to wait out and which end a resume point."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from streamheal.watchers import is_history_lost, is_too_large, is_transient


def failure(code: int, labels: list[str] | None = None) -> OperationFailure:
    details = {"code": code, "errmsg": "x", "errorLabels": labels or []}
    return OperationFailure("x", code, details)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (AutoReconnect("connection closed"), True),
        (NetworkTimeout("timed out"), True),
        (ServerSelectionTimeoutError("no server"), True),
        (failure(6), True),  # HostUnreachable
        (failure(91), True),  # ShutdownInProgress
        (failure(10107), True),  # NotWritablePrimary
        (failure(2, ["ResumableChangeStreamError"]), True),
        (failure(112, ["TransientTransactionError"]), True),
        (failure(2), False),  # BadValue: the request itself is wrong
        (failure(121), False),  # DocumentValidationFailure
        (failure(286), False),  # history lost is not waited out
        (ValueError("not a database error"), False),
    ],
)
def test_transient_errors(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


@pytest.mark.parametrize(
    ("code", "lost"), [(286, True), (280, True), (260, True), (136, False), (6, False)]
)
def test_history_lost_codes(code: int, lost: bool) -> None:
    assert is_history_lost(failure(code)) is lost


def test_only_bson_object_too_large_is_too_large() -> None:
    assert is_too_large(failure(10334)) is True
    assert is_too_large(failure(10335)) is False
    assert is_too_large(AutoReconnect("closed")) is False
