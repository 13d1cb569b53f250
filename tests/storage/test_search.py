"""Search text processing: folding including đ, query parsing, FTS5 quoting, snippets with accents kept."""

import pytest

from digitize.errors import BadArgsError
from storage.search import exact_tokens, folded_tokens, fts5_match, highlight, parse_query


def test_tokens_keep_accents_in_exact_and_fold_them_including_d_stroke():
    assert exact_tokens("Quyền sử dụng ĐẤT") == ["quyền", "sử", "dụng", "đất"]
    assert folded_tokens("Quyền sử dụng ĐẤT") == ["quyen", "su", "dung", "dat"]


def test_decomposed_input_matches_precomposed():
    assert exact_tokens("quye\u0302\u0300n") == ["quyền"]


def test_query_deduplicates_and_refuses_empty():
    q = parse_query("Đất đất dat")
    assert (q.exact, q.folded) == (("đất", "dat"), ("dat",))
    with pytest.raises(BadArgsError):
        parse_query("?!")


def test_fts5_expression_quotes_every_token():
    assert fts5_match(("or", 'a"b'), "folded") == 'folded : ("or" "a""b")'


def test_highlight_marks_matches_in_the_accented_text():
    text = "Ủy ban nhân dân tỉnh cấp giấy chứng nhận quyền sử dụng đất cho ông Nguyễn Văn Đức"
    assert highlight(text, parse_query("duc")).endswith("Nguyễn Văn [Đức]")
    assert "[quyền] [sử] [dụng] [đất]" in highlight(text, parse_query("QUYEN SU DUNG DAT"))


def test_highlight_windows_long_text_around_the_first_match():
    text = "mở đầu " * 100 + "đăng ký biến động" + " kết thúc" * 100
    snippet = highlight(text, parse_query("dang ky"), width=60)
    assert snippet.startswith("…") and snippet.endswith("…") and "[đăng] [ký]" in snippet
    assert len(snippet) <= 60 + 2 + 4


def test_highlight_without_a_match_shows_the_beginning():
    assert highlight("trang bìa", parse_query("khác")) == "trang bìa"


def test_highlight_marks_every_whole_word_match_inside_the_window_and_none_cut_by_its_end():
    text = "đất " * 5 + "đấtnền " + "x" * 30 + " đất đất"
    snippet = highlight(text, parse_query("dat"), width=30)
    assert snippet == "[đất] [đất] [đất] [đất] [đất] đấtnền xxx…"  # đấtnền is another word
    assert highlight("đất abcd đất", parse_query("dat"), width=10) == "[đất] abcd đ…"  # cut by the end: unmarked


def test_highlight_of_a_folded_head_equals_that_of_the_whole_text(monkeypatch):
    """Folding only a head of the text (grown until the window fits) gives the snippet folding it all gives."""
    import random

    from storage import search

    rng = random.Random(11)
    words = ["quyền", "sử", "dụng", "đất", "thửa", "Nguyễn", "Văn", "Đức", "giấy", "chứng", "nhận", "hộ", "biến",
             "động", "Khánh", "Hòa", "lệ", "phí", "x" * 30, "a"]
    cases = []
    for _ in range(300):
        text = rng.choice([" ", "\n", "  \t"]).join(rng.choices(words, k=rng.randint(1, 1500)))
        text = rng.choice(["", "  ", "\n"]) + text + rng.choice(["", " ", "\n\n"])
        query = parse_query(" ".join(rng.sample(words, rng.randint(1, 3))))
        cases.append((text, query, rng.choice([40, 160, 300])))
    filler = [w for w in words if w not in ("đất", "Đức")]
    for at in range(700, 1400, 7):  # the first match near the head's first cut, the window across it or not
        before = " ".join(rng.choices(filler, k=400))[:at].rstrip()
        text = before + " Đức đất " + " ".join(rng.choices(words, k=rng.randint(0, 600)))
        cases.append((text, parse_query(rng.choice(["duc", "đất đức", "dat"])), rng.choice([40, 160, 300])))
    fast = [highlight(t, q, w) for t, q, w in cases]
    monkeypatch.setattr(search, "FOLD_HEAD", 10**9)  # fold the whole text, as before
    assert fast == [highlight(t, q, w) for t, q, w in cases]
    assert any(len(t) > 5000 and "[" in s and not s.startswith("…") for (t, _, _), s in zip(cases, fast))
    assert any(len(t) > 5000 and s.startswith("…") and s.endswith("…") for (t, _, _), s in zip(cases, fast))


def test_the_latin_fast_fold_equals_search_key_on_any_text():
    """fold_latin takes the C-only path for Vietnamese (and most Latin) text and search_key's otherwise:
    both give search_key's answer, for every code point below U+3100 alone and all together, and random mixes of them."""
    import random

    from digitize.text import search_key
    from storage.search import fold_latin

    every = [chr(c) for c in range(0x3100)]  # the fast path's set is chosen below U+3000
    assert fold_latin("".join(every)) == search_key("".join(every))
    assert all(fold_latin(c) == search_key(c) for c in every)
    assert fold_latin("Quyền sử dụng ĐẤT Ơ Ư") == "quyen su dung dat o u"  # the fast path
    assert fold_latin("Straße İ ﬁ") == search_key("Straße İ ﬁ") == "strasse i fi"  # not the fast path
    rng = random.Random(3)
    pools = [range(0x80), range(0x250), range(0x1E00, 0x1F00), range(0x300, 0x370), range(0x3000)]
    for _ in range(3000):
        text = "".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randint(0, 24)))
        if not any(0xD800 <= ord(c) < 0xE000 for c in text):
            assert fold_latin(text) == search_key(text), repr(text)
