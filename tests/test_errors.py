"""errors.resource_fault: a full disk is the machine's fault (exit 5), whatever library reports it."""

from __future__ import annotations

import errno

from digitize.errors import ExitCode, ResourceError, resource_fault


def test_enospc_and_quota_are_resource_faults() -> None:
    for code in (errno.ENOSPC, errno.EDQUOT):
        fault = resource_fault(OSError(code, "No space left on device"), "cannot write out.pdf")
        assert isinstance(fault, ResourceError) and fault.exit_code == ExitCode.file_access
        assert str(fault).startswith("cannot write out.pdf: ")


def test_qpdfs_system_error_text_is_recognised_too() -> None:
    class QpdfError(Exception):  # pikepdf's mapping of QPDFSystemError carries only the text
        pass

    fault = resource_fault(QpdfError("out.pdf: write: No space left on device"), "cannot write out.pdf")
    assert isinstance(fault, ResourceError)


def test_other_errors_are_not_resource_faults() -> None:
    assert resource_fault(OSError(errno.EACCES, "Permission denied"), "x") is None
    assert resource_fault(ValueError("bad"), "x") is None
