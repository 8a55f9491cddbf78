"""What a person sees of a session's device: "Firefox on Linux", from the ``User-Agent`` of its sign-in.

The header is the client's to write, so nothing of it is kept as sent: it is reduced to two short codes
from fixed lists (``ff li``), stored with the session and its index entry, and turned back into words only
when listed. A label can therefore never carry markup, a log-injection line break or anyone's data, and it
costs a few bytes per session. An unknown browser or system is said to be unknown, never guessed.
"""

from __future__ import annotations

# Most specific first: Edge, Opera and Samsung Internet also say "Chrome" and "Safari"; Chrome says "Safari".
_BROWSERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("ed", ("Edg/", "EdgA/", "EdgiOS/", "Edge/"), "Edge"),
    ("op", ("OPR/", "OPT/", "Opera"), "Opera"),
    ("sa", ("SamsungBrowser/",), "Samsung Internet"),
    ("ff", ("Firefox/", "FxiOS/"), "Firefox"),
    ("ch", ("Chrome/", "CriOS/", "Chromium/"), "Chrome"),
    ("sf", ("Safari/",), "Safari"),
)
_SYSTEMS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("io", ("iPhone", "iPad", "iPod"), "iOS"),
    ("an", ("Android",), "Android"),
    ("co", ("CrOS",), "ChromeOS"),
    ("wi", ("Windows",), "Windows"),
    ("ma", ("Macintosh", "Mac OS X"), "macOS"),
    ("li", ("Linux", "X11"), "Linux"),
)
_BROWSER_NAMES = {code: name for code, _, name in _BROWSERS}
_SYSTEM_NAMES = {code: name for code, _, name in _SYSTEMS}
UNKNOWN = "-"
_MAX_SCANNED = 512  # a longer header is judged by its start: no device needs more to say what it is


def _first(user_agent: str, table: tuple[tuple[str, tuple[str, ...], str], ...]) -> str:
    for code, marks, _ in table:
        if any(mark in user_agent for mark in marks):
            return code
    return UNKNOWN


def device_code(user_agent: str | None) -> str:
    """``"ff li"`` for a Firefox on Linux; ``"- -"`` when nothing is recognised (or there is no header)."""
    ua = (user_agent or "")[:_MAX_SCANNED]
    return f"{_first(ua, _BROWSERS)} {_first(ua, _SYSTEMS)}"


def device_label(code: str) -> str:
    """The words for a :func:`device_code`: "Firefox on Linux", "Safari", "Unknown device"."""
    browser_code, _, system_code = code.partition(" ")
    browser = _BROWSER_NAMES.get(browser_code)
    system = _SYSTEM_NAMES.get(system_code)
    if browser and system:
        return f"{browser} on {system}"
    return browser or (f"A browser on {system}" if system else "Unknown device")
