"""Object keys: readable, derived only from validated parts, never from titles or file names."""

import pytest

from digitize.errors import BadArgsError
from storage.keys import case_prefix, check_key, document_prefix, object_key, original_extension

SHA = "3f2a9c0d11e4b7a8" + "0" * 48


def test_key_is_case_sequence_role_and_hash():
    prefix = document_prefix("000.00.31.h56-241015-0027", 3)
    assert object_key(prefix, "pdfa", SHA, "pdf") == "000.00.31.H56-241015-0027/0003/pdfa-3f2a9c0d11e4b7a8.pdf"


def test_documents_without_a_case_go_under_unmatched():
    assert document_prefix(None, 12) == "_unmatched/0012"


def test_invalid_case_id_never_becomes_a_key():
    with pytest.raises(BadArgsError, match="case ID"):
        document_prefix("../../etc-241015-0001", 1)


@pytest.mark.parametrize("name, ext", [("Hồ sơ.PDF", "pdf"), ("scan.tiff", "tiff"), ("../x.sh;rm", "bin"),
                                       ("no-extension", "bin"), ("a.tar.gz", "gz"), ("weird.p$f", "bin")])
def test_only_a_vetted_extension_of_the_source_name_is_used(name, ext):
    assert original_extension(name) == ext


def test_hash_must_be_a_sha256():
    with pytest.raises(BadArgsError, match="SHA-256"):
        object_key("a/0001", "pdfa", "../../x", "pdf")


@pytest.mark.parametrize("key", ["a/../b", "..", "a/./b", "-rf", "a b", "a\\b", "a/", "đ/x"])
def test_check_key_refuses_traversal_and_odd_characters(key):
    with pytest.raises(BadArgsError):
        check_key(key)


def test_sequence_must_be_positive_and_case_prefix_ends_with_slash():
    with pytest.raises(BadArgsError):
        document_prefix("000.00.31.H56-241015-0027", 0)
    assert case_prefix("000.00.31.H56-241015-0027") == "000.00.31.H56-241015-0027/"


def test_one_sequence_bound_for_keys_intake_and_rebuild():
    """review rev17cli M4: intake accepted up to 99 999, reindex and link records only 9 999."""
    from pipelines import metadata
    from storage import keys, rebuild

    assert metadata.SEQUENCE_MAX is keys.SEQUENCE_MAX and rebuild.check_sequence is keys.check_sequence
    assert document_prefix(None, keys.SEQUENCE_MAX) == f"_unmatched/{keys.SEQUENCE_MAX}"
    for bad in (keys.SEQUENCE_MAX + 1, True, "3"):
        with pytest.raises(BadArgsError, match=f"from 1 to {keys.SEQUENCE_MAX}"):
            document_prefix(None, bad)
