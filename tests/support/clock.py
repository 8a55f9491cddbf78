"""The one fake clock of the tests: moved forward instead of sleeping.

``Clock()`` is real time plus an offset: for a bff whose peers (the emulator, Redis) keep real time, so
only what bff decides by its own clock jumps. ``Clock(start=...)`` stands still at ``start`` until moved:
for code with no peer at all, where exact times make exact assertions. Either is a plain
``Callable[[], float]``, the type ``create_app(clock=...)`` and the session code take, and may be shared
with a server thread.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self, start: float | None = None) -> None:
        self._start = start
        self._offset = 0.0

    def __call__(self) -> float:
        return (time.time() if self._start is None else self._start) + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never back: nothing here expects time to run backwards)."""
        assert seconds >= 0, seconds
        self._offset += seconds
