"""One exception hierarchy; each class carries the process exit code the CLI returns.

Every error a user can cause or meet is one of these, so the CLI prints exactly one line
(``digitize: <message>``) and exits with the class's code instead of showing a traceback.
The codes are documented in the README and in ``digitize --help``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    ok = 0
    bad_args = 1  # wrong command-line use (click also uses 2 for usage errors)
    input_file = 2  # input is corrupt, truncated, empty, unsupported, too large
    missing_dependency = 3  # tesseract, poppler, java/veraPDF missing
    invalid_output = 4  # output failed PDF/A validation
    file_access = 5  # cannot read input / write output
    ocr_failed = 6  # tesseract crashed or timed out
    encrypted_pdf = 8
    invalid_config = 9
    storage = 10  # object store or index unavailable / refused
    verification = 11  # fixity check found missing or corrupt objects
    not_found = 12  # case or document not found
    signing = 13  # the signing key cannot be used: wrong PIN, expired certificate, token gone
    internal = 15  # a bug, or the resident converter stopped under a run
    interrupted = 130


class DigitizeError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code: ExitCode = ExitCode.input_file

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, always


class BadArgsError(DigitizeError):
    exit_code = ExitCode.bad_args


class InputError(DigitizeError):
    """The input file cannot be turned into pages (corrupt, truncated, empty, unsupported)."""

    exit_code = ExitCode.input_file


class UnsupportedInputError(InputError):
    pass


class InputTooLargeError(InputError):
    """Absurd pixel counts or decompression bombs: refused before decoding."""


class TooManyPagesError(InputTooLargeError):
    """More pages than ``convert.max_pages``: refused when the file is opened, before any page is decoded."""


class FileTooLargeError(InputTooLargeError):
    """Over ``convert.max_input_mb``, or sparse (mostly holes): refused from its size, before it is read."""


class EncryptedPdfError(InputError):
    exit_code = ExitCode.encrypted_pdf


class MissingDependencyError(DigitizeError):
    exit_code = ExitCode.missing_dependency


class OcrError(DigitizeError):
    exit_code = ExitCode.ocr_failed


class OcrTimeoutError(OcrError):
    pass


class OutputValidationError(DigitizeError):
    """veraPDF (or our own checks) rejected an output: it is never left at OUTPUT."""

    exit_code = ExitCode.invalid_output


class FileAccessError(DigitizeError):
    exit_code = ExitCode.file_access


class ResourceError(FileAccessError):
    """This machine ran out of something a run needs (disk space, quota): not the input's fault,
    so the file is kept and tried again later."""


RESOURCE_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT


def resource_fault(error: BaseException, what: str) -> ResourceError | None:
    """The ResourceError an OSError (or qpdf's system error) stands for, or None if it is another kind.
    pikepdf reports qpdf's write failures as plain exceptions whose text carries the errno's words."""
    errno = getattr(error, "errno", None)
    if errno in RESOURCE_ERRNOS:
        return ResourceError(f"{what}: {error.strerror or 'no space left on device'}")
    text = str(error)
    if not isinstance(error, OSError) and ("No space left on device" in text or "Disk quota exceeded" in text):
        return ResourceError(f"{what}: {'Disk quota exceeded' if 'quota' in text else 'No space left on device'}")
    return None


class ConfigError(DigitizeError):
    exit_code = ExitCode.invalid_config


class StorageError(DigitizeError):
    """Object store or index failed after bounded retries."""

    exit_code = ExitCode.storage


class VerificationError(DigitizeError):
    exit_code = ExitCode.verification


class NotFoundError(DigitizeError):
    exit_code = ExitCode.not_found


class SigningError(DigitizeError):
    """The signing key or its certificate cannot be used (wrong PIN, expired or unsuitable certificate,
    no such key): nothing is signed, so nothing is stored."""

    exit_code = ExitCode.signing


class SignerUnavailableError(SigningError, StorageError):
    """The token went away or stopped answering, or the timestamp/OCSP service did not answer. Like
    storage being down it says nothing about the file: pipelines keep the file (it is a StorageError
    to them) and retry; exit code 10 (try again later), where a wrong PIN is 13 (fix, don't retry)."""

    exit_code = ExitCode.storage
class NotRegularFileError(UnsupportedInputError):
    """A symlink, folder, device or pipe where a scan was expected: links are never followed."""


def error_class(names: "list[str] | tuple[str, ...]",
                default: "type[DigitizeError] | None" = DigitizeError) -> "type[DigitizeError] | None":
    """The first DigitizeError subclass (of those imported) called by one of NAMES, most specific first
    (an exception's class and its ancestors), else DEFAULT: another process's error is named, never
    code, so only a class of ours, built from its one line, can stand for it."""
    found: dict[str, type[DigitizeError]] = {}
    todo: list[type[DigitizeError]] = [DigitizeError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return next((found[name] for name in names if name in found), default)
