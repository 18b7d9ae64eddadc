"""The log formatters print what `extra=` carries (e.g. a netns resolver's error text)."""

from __future__ import annotations

import json
import logging

from netshift.logs import JsonFormatter, TextFormatter


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("netshift.test")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, msg, args, None, extra=extra
    )


def test_json_formatter_prints_extra_fields() -> None:
    rec = record(
        "netns resolver %r failed",
        "CriResolver('unix:///run/containerd/containerd.sock')",
        resolver="CriResolver(...)",
        error="cannot list the sandboxes of pod u: UNAVAILABLE: connection refused",
    )
    out = json.loads(JsonFormatter().format(rec))
    assert out["error"] == "cannot list the sandboxes of pod u: UNAVAILABLE: connection refused"
    assert out["resolver"] == "CriResolver(...)"
    assert out["level"] == "warning" and out["logger"] == "netshift.test"
    assert "failed" in out["msg"]
    for standard in ("args", "levelno", "pathname", "thread"):
        assert standard not in out


def test_json_formatter_keeps_its_own_keys_and_the_fields_dict() -> None:
    rec = record("hello", msg_extra=1, fields={"pod": "ns/p"})
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "hello" and out["pod"] == "ns/p" and out["msg_extra"] == 1
    clash = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    clash.level = "not the level"  # an attribute named like an entry key does not win
    assert json.loads(JsonFormatter().format(clash))["level"] == "info"


def test_text_formatter_appends_extra_fields() -> None:
    line = TextFormatter("%(levelname)s %(message)s").format(record("boom", error="why"))
    assert line == 'WARNING boom error="why"'
