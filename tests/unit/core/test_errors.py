"""Every mapping in core.errors.classify, the error classes, and handle_specific_errors."""

from __future__ import annotations

import asyncio
import errno
from types import SimpleNamespace
from typing import Any

import pytest

from r3mes_desktop.core import errors as E
from r3mes_desktop.core.errors import ErrorCategory as C
from r3mes_desktop.core.errors import RecoveryStrategy as S


def named(name: str, module: str = "somelib.errors", base: type = Exception) -> type:
    """A stand-in for a library exception class: only its name and module matter."""
    return type(name, (base,), {"__module__": module})


class HttpError(Exception):
    def __init__(self, status: object = None, **attrs: Any) -> None:
        super().__init__(f"HTTP {status}")
        if status is not None:
            self.status = status
        for key, value in attrs.items():
            setattr(self, key, value)


OWN_CLASSES = [
    (E.R3mesError("x"), C.UNKNOWN),
    (E.NetworkError("x"), C.NETWORK),
    (E.TimeoutNetworkError("x"), C.NETWORK),
    (E.CircuitOpenError("x"), C.NETWORK),
    (E.ResourceError("x"), C.RESOURCE),
    (E.AuthenticationError("x"), C.AUTHENTICATION),
    (E.ValidationError("x"), C.VALIDATION),
    (E.IntegrityError("x"), C.VALIDATION),
    (E.AlreadySubmittedError("x", stored_cid="bafy"), C.VALIDATION),
    (E.PermanentError("x"), C.PERMANENT),
]

LIBRARY_NAMES = [
    (named("OutOfMemoryError", "torch.cuda")(), C.RESOURCE),
    (named("OutOfMemoryError", "anything")(), C.RESOURCE),
    (named("ClientConnectionError", "aiohttp.client_exceptions")(), C.NETWORK),
    (named("ServerDisconnectedError", "aiohttp.client_exceptions")(), C.NETWORK),
    (named("ServerTimeoutError", "aiohttp.client_exceptions")(), C.NETWORK),
    (named("ContractLogicError", "web3.exceptions")(), C.VALIDATION),
    (named("ContractCustomError", "web3.exceptions")(), C.VALIDATION),
    (named("BadFunctionCallOutput", "web3.exceptions")(), C.VALIDATION),
    (named("InvalidAddress", "web3.exceptions")(), C.VALIDATION),
    (named("Web3ValidationError", "web3.exceptions")(), C.VALIDATION),
    (named("ValidationError", "eth_utils.exceptions")(), C.VALIDATION),
    (named("ValidationError", "pydantic_core")(), C.VALIDATION),
    (named("ValidationError", "otherlib")(), C.UNKNOWN),  # only known modules' ValidationError
    (named("TimeExhausted", "web3.exceptions")(), C.NETWORK),
    (named("ProviderConnectionError", "web3.exceptions")(), C.NETWORK),
    (named("InvalidTransaction", "eth.exceptions")(), C.AUTHENTICATION),
    (named("InsufficientFunds", "eth.exceptions")(), C.AUTHENTICATION),
    # a subclass is recognised by its base's name (the whole MRO is checked)
    (named("Sub", "x", named("ContractLogicError", "web3.exceptions"))(), C.VALIDATION),
]

STATUSES = [
    *[(HttpError(s), C.NETWORK) for s in (408, 425, 429, 500, 502, 503, 504, 599)],
    *[(HttpError(s), C.AUTHENTICATION) for s in (401, 402, 403, 407)],
    *[(HttpError(s), C.PERMANENT) for s in (404, 410)],
    *[(HttpError(s), C.VALIDATION) for s in (400, 409, 413, 422, 499)],
    (HttpError(302), C.UNKNOWN),
    (HttpError(status_code=503), C.NETWORK),
    (HttpError(response=SimpleNamespace(status=429)), C.NETWORK),
    (HttpError(response=SimpleNamespace(status_code=403)), C.AUTHENTICATION),
    (HttpError(status="503"), C.UNKNOWN),  # a non-int status is ignored
]

STANDARD = [
    (TimeoutError(), C.NETWORK),
    (asyncio.TimeoutError(), C.NETWORK),  # noqa: UP041 - an alias on 3.11; listed as the issue names it
    (ConnectionError(), C.NETWORK),
    (ConnectionRefusedError(), C.NETWORK),
    (ConnectionResetError(), C.NETWORK),
    (BrokenPipeError(), C.NETWORK),
    (MemoryError(), C.RESOURCE),
    (PermissionError("denied"), C.AUTHENTICATION),
    *[
        (OSError(n, "x"), C.RESOURCE)
        for n in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT, errno.EMFILE)
    ],
    *[
        (OSError(n, "x"), C.NETWORK)
        for n in (
            errno.ECONNREFUSED,
            errno.ECONNRESET,
            errno.ECONNABORTED,
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.ENETDOWN,
            errno.ETIMEDOUT,
            errno.EPIPE,
        )
    ],
    (OSError(errno.ENOENT, "x"), C.UNKNOWN),
    (ValueError("bad"), C.VALIDATION),
    (TypeError("bad"), C.VALIDATION),
    (KeyError("k"), C.VALIDATION),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), C.VALIDATION),
    (RuntimeError("who knows"), C.UNKNOWN),
]

TEXT = [
    *[(RuntimeError(f"rpc said: {t.upper()}!"), C.NETWORK) for t in E._NETWORK_TEXT],
    *[(RuntimeError(f"rpc said: {t}"), C.AUTHENTICATION) for t in E._AUTH_TEXT],
    *[(RuntimeError(f"rpc said: {t}"), C.RESOURCE) for t in E._RESOURCE_TEXT],
    (ValueError("request timed out"), C.NETWORK),  # text wins over the ValueError fallback
]

PRECEDENCE = [
    # our class beats everything; library name beats status; status beats the builtin type
    (E.ValidationError("connection refused"), C.VALIDATION),
    (named("ContractLogicError", "web3.exceptions")("timeout"), C.VALIDATION),
    (HttpError(503, response=None), C.NETWORK),
    (type("H", (PermissionError,), {"status": 503})(), C.NETWORK),
]


@pytest.mark.parametrize(
    ("exc", "category"),
    OWN_CLASSES + LIBRARY_NAMES + STATUSES + STANDARD + TEXT + PRECEDENCE,
    ids=lambda v: type(v).__name__ + ":" + str(v)[:30] if isinstance(v, BaseException) else str(v),
)
def test_classify_table(exc: BaseException, category: E.ErrorCategory) -> None:
    assert E.classify(exc) is category


def test_every_status_maps() -> None:
    for status in range(100, 600):
        assert E.category_for_status(status) in set(C)


def test_strategies_and_retryable_sets() -> None:
    assert E.STRATEGY == {
        C.NETWORK: S.RETRY_WITH_BACKOFF,
        C.RESOURCE: S.WAIT_FOR_RESOURCES,
        C.AUTHENTICATION: S.FAIL_FAST,
        C.VALIDATION: S.FAIL_FAST,
        C.PERMANENT: S.DEAD_LETTER,
        C.UNKNOWN: S.FAIL_FAST,
    }
    assert {C.NETWORK, C.RESOURCE} == E.RETRYABLE == E.UNHEALTHY
    assert E.NetworkError("x").retryable and not E.ValidationError("x").retryable
    assert E.PermanentError("x").strategy is S.DEAD_LETTER


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (ConnectionError("refused"), E.NetworkError),
        (TimeoutError(), E.TimeoutNetworkError),
        (asyncio.TimeoutError(), E.TimeoutNetworkError),  # noqa: UP041 - alias on 3.11
        (MemoryError(), E.ResourceError),
        (PermissionError("no"), E.AuthenticationError),
        (ValueError("bad"), E.ValidationError),
        (HttpError(404), E.PermanentError),
        (RuntimeError("?"), E.R3mesError),
    ],
)
def test_to_r3mes_error_wraps_with_cause(exc: Exception, cls: type[E.R3mesError]) -> None:
    wrapped = E.to_r3mes_error(exc, service="ipfs")
    assert type(wrapped) is cls
    assert wrapped.__cause__ is exc
    assert wrapped.service == "ipfs"
    assert wrapped.message.startswith(type(exc).__name__)


def test_to_r3mes_error_keeps_classified_errors() -> None:
    err = E.NetworkError("x", retry_after=3)
    assert E.to_r3mes_error(err, service="chain") is err
    assert err.service == "chain" and err.retry_after == 3
    named_err = E.NetworkError("y", service="ipfs")
    assert E.to_r3mes_error(named_err, service="chain").service == "ipfs"


def test_already_submitted_carries_the_stored_cid() -> None:
    err = E.AlreadySubmittedError("dup", stored_cid="bafyabc", service="chain")
    assert (err.stored_cid, err.service, err.category) == ("bafyabc", "chain", C.VALIDATION)


async def test_handle_specific_errors_on_async_def() -> None:
    @E.handle_specific_errors
    async def upload(fail: BaseException | None) -> str:
        await asyncio.sleep(0)
        if fail is not None:
            raise fail
        return "cid"

    assert await upload(None) == "cid"
    original = ConnectionResetError("reset")
    with pytest.raises(E.NetworkError) as info:
        await upload(original)
    assert info.value.__cause__ is original
    own = E.ValidationError("bad proof")
    with pytest.raises(E.ValidationError) as info2:
        await upload(own)
    assert info2.value is own and own.__cause__ is None
    with pytest.raises(asyncio.CancelledError):
        await upload(asyncio.CancelledError())
    assert upload.__name__ == "upload"


def test_handle_specific_errors_on_plain_def() -> None:
    @E.handle_specific_errors
    def write(fail: Exception | None) -> int:
        if fail is not None:
            raise fail
        return 1

    assert write(None) == 1
    with pytest.raises(E.ResourceError):
        write(OSError(errno.ENOSPC, "No space left on device"))
    own = E.PermanentError("gone")
    with pytest.raises(E.PermanentError) as info:
        write(own)
    assert info.value is own and own.__cause__ is None


def _raised_from(cause: BaseException) -> E.NetworkError:
    try:
        try:
            raise cause
        except BaseException:
            raise E.NetworkError("IPFS daemon is unreachable") from None  # like IpfsClient
    except E.NetworkError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "no_effect"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (_raised_from(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), True),
        (_raised_from(OSError(errno.ECONNREFUSED, "refused")), True),
        (E.CircuitOpenError("ipfs: circuit open"), True),
        (E.AuthenticationError("HTTP 401"), True),  # refused by the service: an answer
        (E.PermanentError("model gone"), True),
        (E.ValidationError("gradient too large"), True),
        (E.IntegrityError("the daemon named other bytes"), False),  # it may have stored them
        (E.NetworkError("connection refused"), False),  # words alone prove nothing
        (_raised_from(ConnectionResetError(errno.ECONNRESET, "reset")), False),
        (E.TimeoutNetworkError("did not answer in time"), False),
        (TimeoutError(), False),
        (E.NetworkError("HTTP 503"), False),
        (asyncio.CancelledError(), False),  # a call timeout cancels it wherever it was
    ],
)
def test_had_no_effect_only_for_refusals_and_calls_never_made(
    exc: BaseException, no_effect: bool
) -> None:
    assert E.had_no_effect(exc) is no_effect
