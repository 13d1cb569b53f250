"""Text log lines: a file name or reason someone chose can neither add a line nor forge a field (M5)."""

from __future__ import annotations

import logging
import sys

from pipelines.logs import event


def test_a_file_name_with_a_line_break_cannot_forge_a_second_log_line(caplog):
    caplog.set_level(logging.INFO, logger="pipelines")
    forged = "x.pdf\n2026-12-02T03:00:00+0000 digitize: INFO: stored file=real.pdf case=000.00.31.H56-241015-0027"
    event(logging.getLogger("pipelines.test"), "taken", file=forged, pages=3)
    [record] = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert message.startswith('taken file="x.pdf 2026') and message.endswith('" pages=3')
    assert record.fields["file"] == forged  # JSON lines keep the value itself (json.dumps escapes it)


def test_a_file_name_with_spaces_and_equals_signs_stays_one_field(caplog):
    caplog.set_level(logging.INFO, logger="pipelines")
    event(logging.getLogger("pipelines.test"), "stored", file="a.pdf case=000.00.31.H56-241015-0027 doc=7",
          doc=8, seq="\x1b[2Jcleared")
    message = caplog.records[0].getMessage()
    assert message == 'stored file="a.pdf case=000.00.31.H56-241015-0027 doc=7" doc=8 seq=\ufffd[2Jcleared'


def test_json_lines_escape_c1_controls_and_bidi_overrides_a_terminal_would_act_on():
    import json

    from pipelines.logs import JsonLinesFormatter

    record = logging.LogRecord("pipelines.test", logging.INFO, __file__, 1, "taken", None, None)
    record.event, record.fields = "taken", {"file": "a\u202eb\x9b2Jc\u2028d.pdf"}
    line = JsonLinesFormatter().format(record)
    assert not any(c in line for c in "\u202e\x9b\u2028") and "\\u202e" in line and "\\u009b" in line
    assert json.loads(line)["file"] == "a\u202eb\x9b2Jc\u2028d.pdf" and "Đ" in JsonLinesFormatter().format(
        logging.LogRecord("p", logging.INFO, __file__, 1, "Đơn", None, None))


def test_a_traceback_or_message_carrying_a_forged_line_stays_indented_under_its_record():
    """Review 2 L3: log.exception("... %s", path) and exception texts built from file names, in text mode."""
    from pipelines.logs import TextFormatter

    forged = "a.pdf\n2026-12-02T03:00:00+0000 digitize: INFO: stored file=real.pdf\r\x1b[2J"
    logger = logging.getLogger("pipelines.test.text")
    try:
        raise ValueError(f"cannot read {forged}")
    except ValueError:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "internal error on %s", (forged,),
                                   sys.exc_info())
    lines = TextFormatter().format(record).split("\n")
    assert len(lines) > 3 and lines[0].split(" ")[1:3] == ["digitize:", "ERROR:"]
    assert all(line.startswith("    ") for line in lines[1:])
    assert not any(" digitize: INFO: " in line and not line.startswith("    ") for line in lines[1:])
    assert all(line.isprintable() for line in lines)
    assert lines[0].endswith("internal error on a.pdf 2026-12-02T03:00:00+0000 digitize: INFO: stored "
                             "file=real.pdf \ufffd[2J")  # the message is one line (rev17ops M1): inside its record


def test_service_logs_use_the_indenting_text_formatter():
    from pipelines import logs

    root = logging.getLogger()
    saved = [(h, h.formatter) for h in root.handlers]
    level = logging.getLogger(logs.LOGGER).level
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        logs.configure(False)
        assert isinstance(handler.formatter, logs.TextFormatter)
    finally:
        root.removeHandler(handler)
        logging.getLogger(logs.LOGGER).setLevel(level)
        for h, f in saved:
            h.setFormatter(f)
