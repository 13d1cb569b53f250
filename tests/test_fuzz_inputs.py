"""Property: any bytes given to a reader are read or refused with a digitize error, never another
exception. A few fast rounds of fuzz/targets.py here; ``python fuzz/run.py --seconds N`` runs them
for longer on demand. Every finding of the long runs becomes a regression test below."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz.targets import read_file, read_sidecar, targets

pytestmark = pytest.mark.integration  # real pikepdf, Pillow, poppler

TARGETS = targets()
FAST = settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_mutated_input_is_read_or_refused_with_a_digitize_error(name: str) -> None:
    strategy, reader = TARGETS[name]

    @FAST
    @given(strategy)
    def check(data) -> None:
        reader(data)

    check()


# --- findings of fuzz/run.py -----------------------------------------------------------------------

def test_a_sidecar_nested_beyond_the_stack_is_a_sidecar_error() -> None:
    read_sidecar(b"[" * 100_000 + b"]" * 100_000)  # was RecursionError


@pytest.mark.parametrize("field", [b"title", b"sequence"])
def test_a_sidecar_number_of_thousands_of_digits_is_a_sidecar_error(field: bytes) -> None:
    """json.loads raises a bare ValueError past Python's 4300-digit limit (review rev17input L2)."""
    read_sidecar(b'{"' + field + b'": ' + b"1" * 5000 + b"}")  # was ValueError: an internal error


@pytest.mark.parametrize("data", [
    b"II*\x00" + b"\x00" * 60,  # a TIFF header with an empty first directory
    b"%PDF-1.7\n1 0 obj << /Type /Page >> endobj trailer << /Root 1 0 R >> %%EOF",
])
def test_degenerate_files_are_refused_plainly(data: bytes) -> None:
    read_file(data)
