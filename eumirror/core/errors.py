"""Typed errors that carry one line an operator can act on, and the contract's exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    LOCKED = 3


class EumirrorError(Exception):
    """An expected failure: its message is the one line shown to the operator."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ConfigError(EumirrorError):
    """The configuration is invalid; names the key and the file."""

    exit_code = ExitCode.USAGE


class LockHeld(EumirrorError):
    """Another eumirror process holds the mirror's lock."""

    exit_code = ExitCode.LOCKED


class CatalogError(EumirrorError):
    """An upstream catalog is malformed: that upstream fails, the published one stays."""


class ImageError(EumirrorError):
    """One image entry cannot be mirrored: that image fails, the rest go on."""


class FetchError(EumirrorError):
    """A transfer failed; `transient` failures are worth another attempt."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient
        self.retry_after = retry_after


class VerifyError(EumirrorError):
    """Downloaded bytes do not match the name the catalog promised."""


class StorageError(EumirrorError):
    """The mirror's disk refused: no space, permission, read-only, I/O error."""


def too_large(size: int, max_bytes: int) -> ImageError:
    """A tarball past [limits] max_image_bytes (a body without a length could be endless)."""
    return ImageError(
        f"the tarball is larger than [limits] max_image_bytes ({size} > {max_bytes}); refused",
        hint="raise max_image_bytes if the upstream really publishes images this large",
    )


def first_error(exc: BaseException) -> BaseException:
    """The first error a task group raised, out of its exception groups (cancellations aside:
    they are the others' reaction to it)."""
    from asyncio import CancelledError  # here: the CLI imports this module before asyncio

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        found = [e for e in exc.exceptions if not isinstance(e, CancelledError)]
        exc = (found or list(exc.exceptions))[0]
    return exc
