"""printable(): untrusted text reaches a terminal inert, Vietnamese intact."""

from digitize.terminal import REPLACEMENT, printable


def test_escapes_bells_c1_and_bidi_overrides_are_made_inert():
    text = printable("Đơn\x1b]0;owned\x07 \x1b[2J\x9b31m x\u202eabc\u2066 a\tb\nc\x00\x7f")
    assert not any(c in text for c in "\x1b\x07\x9b\u202e\u2066\t\n\x00\x7f")
    assert text.startswith("Đơn" + REPLACEMENT) and "a b c" in text


def test_ordinary_vietnamese_text_is_unchanged():
    text = "Giấy chứng nhận quyền sử dụng đất — Nguyễn Văn Đức (bản chính) 100%"
    assert printable(text) == text and printable(None) == ""


def test_plain_removes_controls_and_bidi_from_stored_values_and_keeps_vietnamese():
    from digitize.terminal import plain

    assert plain("01-Giay to\u202egpj.exe\x1b[2J\nfake line") == "01-Giay togpj.exe[2J fake line"
    assert plain("  Đơn\tđề  nghị\u2066\u200b ") == "Đơn đề nghị"
    assert plain("Nguyễn Văn Đức") == "Nguyễn Văn Đức" and plain(None) == ""


def test_log_values_stay_one_field_on_one_line():
    from digitize.terminal import log_value

    assert log_value("scan.pdf") == "scan.pdf"
    assert log_value("a.pdf case=X doc=7") == '"a.pdf case=X doc=7"'
    assert "\n" not in log_value("x.pdf\n2026 digitize: INFO: stored") and log_value("") == '""'
    assert log_value('say "hi"\\') == '"say \\"hi\\"\\\\"'


def test_printable_and_plain_follow_one_rule_for_zero_width_joiners():
    """Review 2 L4: plain() removed ZWJ/ZWNJ, which printable() keeps; both keep them now, both drop ZWSP."""
    from digitize.terminal import plain

    persian, emoji = "می\u200cخواهم", "\U0001F469\u200d\U0001F4BB"
    for text in (persian, emoji):
        assert plain(text) == text and printable(text) == text
    assert plain("a\u200bb") == "ab"


def test_a_file_names_bytes_that_are_not_utf8_print_as_escapes() -> None:
    import os

    from digitize.terminal import printable

    assert printable(os.fsdecode(b"b\xe1/r\xe1.pdf")) == "b\\xe1/r\\xe1.pdf"
    assert printable("x\ud800y") == "x\ufffdy"
    printable(os.fsdecode(b"\xff\xfe")).encode("utf-8")
