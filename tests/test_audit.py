"""The audit trail's shape (:mod:`bff.audit`) and its routing (:func:`bff.logs.configure_logging`)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from bff import audit
from bff.logs import configure_logging, request_id_var

KEYS = {"time", "logger", "event", "outcome", "actor", "target", "client", "request_id"}


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging rewires the root and audit loggers: put them back for the rest of the run."""
    root, trail = logging.getLogger(), logging.getLogger("bff.audit")
    saved = (root.handlers[:], root.level, trail.handlers[:], trail.level, trail.propagate)
    try:
        yield
    finally:
        root.handlers[:], trail.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        trail.setLevel(saved[3])
        trail.propagate = saved[4]


def test_every_event_has_the_same_keys_and_takes_the_request_from_the_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bff.audit")
    rid, client = request_id_var.set("req-1"), audit.client_var.set("203.0.113.7")
    try:
        audit.record("sign_out", actor="u1", target={"sub": "u1", "session": "ab" * 16}, reason="user")
        audit.record("rate_limited", outcome="denied", target={"endpoint": "*"}, suppressed=3, in_request=False)
    finally:
        request_id_var.reset(rid)
        audit.client_var.reset(client)
    audit.record("sign_in", outcome="failure", code="invalid_state")
    first, summary, outside = (r.audit for r in caplog.records)  # type: ignore[attr-defined]
    assert set(first) == KEYS | {"reason"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert (first["client"], first["request_id"], first["actor"]) == ("203.0.113.7", "req-1", "u1")
    assert (summary["client"], summary["request_id"], summary["suppressed"]) == (None, None, 3)
    assert (outside["client"], outside["request_id"], outside["actor"], outside["target"]) == (None, None, None, None)


def test_what_an_event_may_carry_is_closed() -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        audit.record("signed_in")


def test_unknown_keys_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bff.audit")
    audit.record(
        "sign_in",
        target={"sub": "u1", "access_token": "at-secret"},
        code="x",
        refresh_token="rt-secret",
        session_id="sid-secret",
    )
    (event,) = (r.audit for r in caplog.records)  # type: ignore[attr-defined]
    assert event["target"] == {"sub": "u1"}
    assert "secret" not in json.dumps(event)


def test_the_trail_has_its_own_stream_and_ignores_the_log_level(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("error", "text", "stdout")  # an operator who wants only errors, as text
    logging.getLogger("bff.auth").warning("not shown at level error")
    audit.record("sign_out", target={"sub": "u1"}, reason="idle")
    captured = capsys.readouterr()
    assert captured.err == ""
    (line,) = captured.out.splitlines()
    event = json.loads(line)  # JSON whatever BFF_LOG_FORMAT says
    assert (event["event"], event["reason"], event["logger"]) == ("sign_out", "idle", "bff.audit")

    configure_logging("info", "json")  # the default: with everything else, on stderr
    audit.record("sign_out", target={"sub": "u1"}, reason="user")
    logging.getLogger("bff.auth").info("an ordinary line")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [json.loads(x) for x in captured.err.splitlines()]
    assert [x.get("event") for x in lines] == ["sign_out", None]
    assert lines[1]["logger"] == "bff.auth"
