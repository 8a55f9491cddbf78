"""The log handlers and formatters of :mod:`bff.logs`."""

from __future__ import annotations

import io
import logging

from bff.logs import BatchingStreamHandler, TextFormatter


async def test_access_lines_are_batched_other_records_and_shutdown_flush() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval=60)
    handler.setFormatter(TextFormatter())

    def record(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.makeLogRecord(
            {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": msg}
        )

    for i in range(3):
        handler.handle(record("bff.access", logging.INFO, f"line {i}"))
    assert stream.getvalue() == ""  # batched: nothing written yet
    handler.handle(record("uvicorn.error", logging.INFO, "Shutting down"))  # any other record: written at once
    written = [line.split("] ", 1)[1].strip() for line in stream.getvalue().splitlines()]
    assert written == ["line 0", "line 1", "line 2", "Shutting down"]  # in order
    handler.handle(record("bff.access", logging.INFO, "last request"))
    handler.flush()  # what the lifespan does at shutdown (and logging.shutdown at exit)
    assert stream.getvalue().splitlines()[-1].endswith("last request")
