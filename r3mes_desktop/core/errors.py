"""Error hierarchy and classification.

Every failure that crosses an adapter boundary is turned into one of these classes, so the
retry policy, the circuit breaker, the journal and the UI all reason about the same five
categories. `classify()` is the single place that knows what a library's exception means.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")


class ErrorCategory(StrEnum):
    NETWORK = "network"
    RESOURCE = "resource"
    AUTHENTICATION = "authentication"
    VALIDATION = "validation"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


class RecoveryStrategy(StrEnum):
    RETRY_WITH_BACKOFF = "retry_with_backoff"
    WAIT_FOR_RESOURCES = "wait_for_resources"
    FAIL_FAST = "fail_fast"
    DEAD_LETTER = "dead_letter"


STRATEGY: dict[ErrorCategory, RecoveryStrategy] = {
    ErrorCategory.NETWORK: RecoveryStrategy.RETRY_WITH_BACKOFF,
    ErrorCategory.RESOURCE: RecoveryStrategy.WAIT_FOR_RESOURCES,
    ErrorCategory.AUTHENTICATION: RecoveryStrategy.FAIL_FAST,
    ErrorCategory.VALIDATION: RecoveryStrategy.FAIL_FAST,
    ErrorCategory.PERMANENT: RecoveryStrategy.DEAD_LETTER,
    ErrorCategory.UNKNOWN: RecoveryStrategy.FAIL_FAST,
}

RETRYABLE: frozenset[ErrorCategory] = frozenset({ErrorCategory.NETWORK, ErrorCategory.RESOURCE})
"""Categories that mean "try again later"; everything else fails fast or is dead-lettered."""

UNHEALTHY: frozenset[ErrorCategory] = frozenset({ErrorCategory.NETWORK, ErrorCategory.RESOURCE})
"""Categories that count against a service's circuit breaker (a bad input does not)."""


class R3mesError(Exception):
    """Base of every classified error.

    `retry_after` carries a delay the server asked for (Retry-After, "please wait"); the
    retry policy never waits less. `service` names the peer (chain, ipfs, task_api) when known.
    Messages must never contain secrets: callers pass redacted text only.
    """

    category: ClassVar[ErrorCategory] = ErrorCategory.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.retry_after = retry_after

    @property
    def strategy(self) -> RecoveryStrategy:
        return STRATEGY[self.category]

    @property
    def retryable(self) -> bool:
        return self.category in RETRYABLE


class RetryableError(R3mesError):
    """A failure that may succeed if tried again later."""


class NetworkError(RetryableError):
    """Connection refused or reset, timeouts, 5xx, rate limits."""

    category = ErrorCategory.NETWORK


class TimeoutNetworkError(NetworkError):
    """A call that exceeded its per-call timeout."""


class CircuitOpenError(NetworkError):
    """The service's breaker rejected the call; `retry_after` is the time until half-open."""


class TrialInProgressError(CircuitOpenError):
    """A half-open breaker's trial slots are all taken: the service may be back.

    Not a verdict on the service but a wait for one: `ServiceCaller` waits for the trial to
    settle (bounded by the call's timeout) and asks again, instead of failing the call.
    """


class ResourceError(RetryableError):
    """Memory, disk full, GPU busy or out of memory."""

    category = ErrorCategory.RESOURCE


class DeadlineExceededError(ResourceError):
    """The transaction ran past its own deadline (R3MES_TRANSACTION_TIMEOUT).

    Our limit, not the network's: counted as a resource failure (the machine or the round
    was too slow), so a slow round does not read as an outage in the failure metrics.
    """


class AuthenticationError(R3mesError):
    """Bad signature, insufficient funds, permission denied, wrong password."""

    category = ErrorCategory.AUTHENTICATION


class ValidationError(R3mesError):
    """Bad input or a bad proof: retrying the same thing cannot help."""

    category = ErrorCategory.VALIDATION


class IntegrityError(ValidationError):
    """Content does not match what was expected (CID mismatch, checksum, corrupt file)."""


class AlreadySubmittedError(ValidationError):
    """The chain already holds a submission for (round, miner).

    The coordinator treats it as success when `stored_cid` is the transaction's own CID.
    """

    def __init__(self, message: str, *, stored_cid: str | None, service: str | None = None):
        super().__init__(message, service=service)
        self.stored_cid = stored_cid


class PermanentError(R3mesError):
    """Will never succeed (missing model, round closed for good): goes to the dead letters."""

    category = ErrorCategory.PERMANENT


class SignatureVoidError(PermanentError):
    """The chain proved that our signed transaction can never be mined: its nonce is below
    the account's confirmed nonce and no receipt exists for its hash.

    Signing the same call again with a fresh nonce is then safe (the old bytes can never
    land, so the effect still happens at most once); the saga does it, and so does a
    dead-letter retry. Permanent only for these bytes, never for the call.
    """


_CATEGORY_CLASS: dict[ErrorCategory, type[R3mesError]] = {
    ErrorCategory.NETWORK: NetworkError,
    ErrorCategory.RESOURCE: ResourceError,
    ErrorCategory.AUTHENTICATION: AuthenticationError,
    ErrorCategory.VALIDATION: ValidationError,
    ErrorCategory.PERMANENT: PermanentError,
    ErrorCategory.UNKNOWN: R3mesError,
}

_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)
_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.ENOMEM, errno.EDQUOT, errno.EMFILE})

_NETWORK_TEXT = (
    "connection refused",
    "connection reset",
    "connection aborted",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "service unavailable",
    "bad gateway",
    "too many requests",
    "rate limit",
    "nonce too low",
    "replacement transaction underpriced",
)
_AUTH_TEXT = (
    "insufficient funds",
    "invalid signature",
    "invalid sender",
    "permission denied",
    "unauthorized",
    "forbidden",
    "mac mismatch",
)
_RESOURCE_TEXT = ("out of memory", "no space left", "cuda error: out of memory", "device busy")


def _status_of(exc: BaseException) -> int | None:
    """HTTP status carried by aiohttp, requests or web3 HTTP errors, if any."""
    for attr in ("status", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if response is not None:
        for attr in ("status", "status_code"):
            value = getattr(response, attr, None)
            if isinstance(value, int):
                return value
    return None


def category_for_status(status: int) -> ErrorCategory:
    """Map an HTTP status: 408/425/429/5xx are transient, 401/403 auth, other 4xx validation."""
    if status in (408, 425, 429) or 500 <= status <= 599:
        return ErrorCategory.NETWORK
    if status in (401, 402, 403, 407):
        return ErrorCategory.AUTHENTICATION
    if status in (404, 410):
        return ErrorCategory.PERMANENT
    if 400 <= status <= 499:
        return ErrorCategory.VALIDATION
    return ErrorCategory.UNKNOWN


def _by_text(text: str) -> ErrorCategory | None:
    lowered = text.lower()
    for needle in _AUTH_TEXT:
        if needle in lowered:
            return ErrorCategory.AUTHENTICATION
    for needle in _RESOURCE_TEXT:
        if needle in lowered:
            return ErrorCategory.RESOURCE
    for needle in _NETWORK_TEXT:
        if needle in lowered:
            return ErrorCategory.NETWORK
    return None


def _by_library_type(exc: BaseException) -> ErrorCategory | None:
    """Library exceptions recognised by class name, so core/ imports no library."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__
    if "OutOfMemoryError" in names:  # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError
        return ErrorCategory.RESOURCE
    if names & {"ClientConnectionError", "ServerDisconnectedError", "ServerTimeoutError"}:
        return ErrorCategory.NETWORK
    if names & {"ContractLogicError", "ContractCustomError", "BadFunctionCallOutput"}:
        return ErrorCategory.VALIDATION
    validation_names = {"InvalidAddress", "ValidationError", "Web3ValidationError"}
    if names & validation_names and module.startswith(("web3", "eth_", "pydantic")):
        return ErrorCategory.VALIDATION
    if names & {"TimeExhausted", "ProviderConnectionError"}:
        return ErrorCategory.NETWORK
    if names & {"InvalidTransaction", "InsufficientFunds"}:
        return ErrorCategory.AUTHENTICATION
    return None


def classify(exc: BaseException) -> ErrorCategory:
    """The category of any exception: ours, the standard library's, or a known library's."""
    if isinstance(exc, R3mesError):
        return exc.category
    library = _by_library_type(exc)
    if library is not None:
        return library
    status = _status_of(exc)
    if status is not None:
        return category_for_status(status)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError):
        return ErrorCategory.NETWORK
    if isinstance(exc, MemoryError):
        return ErrorCategory.RESOURCE
    if isinstance(exc, PermissionError):
        return ErrorCategory.AUTHENTICATION
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _RESOURCE_ERRNOS:
            return ErrorCategory.RESOURCE
        if exc.errno in _NETWORK_ERRNOS:
            return ErrorCategory.NETWORK
    text_category = _by_text(str(exc))
    if text_category is not None:
        return text_category
    if isinstance(exc, ValueError | TypeError | KeyError | UnicodeError):
        return ErrorCategory.VALIDATION
    return ErrorCategory.UNKNOWN


def had_no_effect(exc: BaseException) -> bool:
    """Did the failed call certainly change nothing on the service?

    Yes for a refused connection (ECONNREFUSED anywhere in the cause chain), a call the
    breaker stopped, and a refusal the service answered (authentication, validation,
    permanent). No for timeouts, resets, 5xx, malformed answers and anything unknown: the
    request may have been carried out before its answer was lost. An IntegrityError (the
    service named other content) counts as an effect: it may have stored something.
    """
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            break
        if isinstance(seen, CircuitOpenError | ConnectionRefusedError):
            return True
        if isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED:
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, IntegrityError) or not isinstance(exc, Exception):
        return False
    return classify(exc) in (
        ErrorCategory.AUTHENTICATION,
        ErrorCategory.VALIDATION,
        ErrorCategory.PERMANENT,
    )


def to_r3mes_error(exc: BaseException, *, service: str | None = None) -> R3mesError:
    """Wrap `exc` in the class of its category, keeping it as `__cause__`.

    An exception that is already classified is returned unchanged (its service filled in).
    """
    if isinstance(exc, R3mesError):
        if service is not None and exc.service is None:
            exc.service = service
        return exc
    category = classify(exc)
    cls: type[R3mesError] = _CATEGORY_CLASS[category]
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        cls = TimeoutNetworkError
    message = str(exc) or type(exc).__name__
    wrapped = cls(f"{type(exc).__name__}: {message}", service=service)
    wrapped.__cause__ = exc
    return wrapped


def handle_specific_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: re-raise any exception as its classified `R3mesError`.

    Works on plain functions and on coroutine functions alike: wrapping a coroutine
    function like a plain one would return the coroutine unawaited and never see its
    exception.
    """
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return await func(*args, **kwargs)
            except R3mesError:
                raise  # already classified; `from exc` would make it its own cause
            except Exception as exc:
                raise to_r3mes_error(exc) from exc

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except R3mesError:
            raise
        except Exception as exc:
            raise to_r3mes_error(exc) from exc

    return wrapper
