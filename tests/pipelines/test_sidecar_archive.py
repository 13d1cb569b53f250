"""A sidecar's nested ``archive`` object (review intake L4): only the known archive fields, as short text."""

from __future__ import annotations

from pipelines.metadata import ARCHIVE_VALUE_MAX, clue_from_mapping


def test_known_archive_fields_are_kept_in_either_spelling():
    clue, problems = clue_from_mapping("sidecar", {"archive": {"Language": "vi", "rights": "Công khai",
                                                               "Description": "Hồ sơ đất", "PageTotal": 12}})
    assert problems == []
    assert clue.values["archive"] == {"Language": "vi", "Rights": "Công khai", "Description": "Hồ sơ đất",
                                      "PageTotal": "12"}


def test_unknown_keys_nested_objects_and_overlong_values_are_problems():
    _, problems = clue_from_mapping("sidecar", {"archive": {"Evil": "x", "Title": {"a": 1},
                                                            "Description": "x" * (ARCHIVE_VALUE_MAX + 1)}})
    assert "unknown archive field 'Evil'" in problems
    assert "archive field Title must be text" in problems
    assert f"archive field Description is longer than {ARCHIVE_VALUE_MAX} characters" in problems
    _, problems = clue_from_mapping("sidecar", {"rights": "y" * (ARCHIVE_VALUE_MAX + 1)})
    assert problems == [f"archive field Rights is longer than {ARCHIVE_VALUE_MAX} characters"]


def test_an_archive_that_is_not_an_object_is_a_problem_and_an_empty_one_is_absent():
    assert clue_from_mapping("sidecar", {"archive": ["OrganId"]})[1] == ["archive must be an object of archive fields"]
    clue, problems = clue_from_mapping("sidecar", {"archive": "", "case_id": "000.00.31.H56-241015-0027"})
    assert problems == [] and "archive" not in clue.values


def test_a_list_object_or_boolean_for_a_text_field_is_a_problem_not_its_repr():
    """{"title": ["x"]} was stored as the title "['x']", true as "True" (review rev17input L3)."""
    for value in (["x"], {"a": 1}, True):
        clue, problems = clue_from_mapping("sidecar", {"title": value, "case_id": "000.00.31.H56-241015-0027"})
        assert problems == ["title must be text or a number"] and "title" not in clue.values
    assert clue_from_mapping("sidecar", {"archive": {"Title": False}})[1] == ["archive field Title must be text"]
    assert clue_from_mapping("sidecar", {"sequence": 7})[0].values == {"sequence": 7}


def test_the_archive_key_is_read_in_any_case_and_twice_is_a_problem():
    """{"Archive": {...}} was neither read nor reported, unlike every other key (review rev17input L3)."""
    clue, problems = clue_from_mapping("sidecar", {"Archive": {"Language": "vi"}})
    assert problems == [] and clue.values["archive"] == {"Language": "vi"}
    _, problems = clue_from_mapping("sidecar", {"archive": {"Language": "vi"}, "ARCHIVE": {"Language": "en"}})
    assert problems == ["archive is given more than once (keys that differ only in case)"]
