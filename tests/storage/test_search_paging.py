"""A search page, its total and its "more" flag do not depend on how many candidates were fetched first
(storage/index_accounts.py: a few, then all SEARCH_CAP if they did not fill the page), nor on who asks
when they see the same entries; the order (relevance, or newest first above RANK_CAP matches) is decided by
a count of every agency's matches."""

from __future__ import annotations

import pytest

from storage import index as index_module
from storage.access import Principal, SearchFilters
from storage.models import CaseRecord
from storage.search import parse_query

from test_search_scope import OWN, add_document

CASES = [f"{OWN}-241015-{n:04d}" for n in range(1, 5)]  # every entry the officer's: it sees what the archivist sees


def fill(index, count: int, first: int = 1) -> None:
    for n, case_id in enumerate(CASES):
        index.upsert_case(CaseRecord(case_id, status="done" if n % 2 else "open"))
    with index.transaction():
        for n in range(count):
            add_document(index, CASES[n % len(CASES)], f"đơn đề nghị cấp giấy số {n}", first + n)


def view(page):
    return [(h.case_id, h.doc_id) for h in page.hits], page.total, page.capped


@pytest.mark.parametrize("count", [49, 50, 51, 52, 120])
def test_a_page_is_the_same_for_an_officer_and_an_archivist_who_see_the_same(archive, count):
    """The officer's first fetch was 50 candidates: with exactly 50 matches its page said "more" (capped)
    where the archivist's (all SEARCH_CAP fetched) said exactly 50."""
    fill(archive.index, count)
    officer = archive.gate(Principal("an", "officer", (OWN,)))
    archivist = archive.gate(Principal("arch", "archivist"))
    for filters in (SearchFilters(), SearchFilters(status="done")):
        for offset in (0, 20, 40):
            mine, everyone = officer.search("de nghi", filters, 20, offset), archivist.search("de nghi", filters, 20, offset)
            assert view(mine) == view(everyone)
            accepted = count if not filters.status else count // 2
            assert mine.total <= accepted and (mine.capped or mine.total == accepted)
            if count <= 50:  # every candidate judged: the count is exact and nothing more is claimed
                assert (mine.total, mine.capped) == (accepted, False)

def test_the_order_is_decided_by_the_count_of_every_agencys_matches(archive, monkeypatch):
    index = archive.index
    monkeypatch.setattr(index_module, "RANK_CAP", 5)
    fill(index, 5)
    query = parse_query("de nghi")
    ranked = index._match_ids(query, False, 50, "relevance")
    assert index._ranked_ids(query, False, 50) == ranked and index._count_matches(query, False, 6) == 5
    assert index._ranked_ids(query, False, 50, (OWN,)) == ranked  # few: ranked as for anyone
    fill(index, 1, first=100)  # six matches: newest first
    assert index._count_matches(query, False, 6) == 6 and index._count_matches(query, False, 3) == 3
    newest = index._match_ids(query, False, 50, "newest")
    assert newest == sorted(newest, reverse=True)
    assert index._ranked_ids(query, False, 4) == newest[:4]
    assert index._ranked_ids(query, False, 4, (OWN,)) == newest[:4]
    assert index._ranked_ids(query, False, 4, ("000.00.12.H29",)) == []
    one = parse_query("số 3")
    assert index._count_matches(one, False, 6) == 1 and len(index._ranked_ids(one, False, 50)) == 1
    assert index._ranked_ids(parse_query("không có"), False, 50) == []
