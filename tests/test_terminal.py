"""printable(): untrusted text reaches a terminal inert, Vietnamese intact."""

from digitize.terminal import REPLACEMENT, printable


def test_escapes_bells_c1_and_bidi_overrides_are_made_inert():
    text = printable("Đơn\x1b]0;owned\x07 \x1b[2J\x9b31m x\u202eabc\u2066 a\tb\nc\x00\x7f")
    assert not any(c in text for c in "\x1b\x07\x9b\u202e\u2066\t\n\x00\x7f")
    assert text.startswith("Đơn" + REPLACEMENT) and "a b c" in text


def test_ordinary_vietnamese_text_is_unchanged():
    text = "Giấy chứng nhận quyền sử dụng đất — Nguyễn Văn Đức (bản chính) 100%"
    assert printable(text) == text and printable(None) == ""
