"""The device label of a session: a fixed vocabulary chosen by what the User-Agent says, never its text."""

from __future__ import annotations

import pytest

from bff.sessions.device import device_code, device_label

_UAS = {
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0": "Firefox on Linux",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.0.0": "Edge on Windows",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15": "Safari on macOS",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1": "Chrome on iOS",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 "
    "Chrome/122.0.0.0 Mobile Safari/537.36": "Samsung Internet on Android",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36": "Chrome on ChromeOS",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 OPR/115.0.0.0": "Opera on Windows",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 "
    "Safari/537.36": "Chrome on Linux",
    "okhttp/4.12.0": "Unknown device",
    "KryptosApp/2.3 (Android 14)": "A browser on Android",
    "": "Unknown device",
}


@pytest.mark.parametrize(("user_agent", "label"), _UAS.items())
def test_known_browsers_and_systems_are_named(user_agent: str, label: str) -> None:
    assert device_label(device_code(user_agent)) == label


def test_nothing_of_the_header_itself_is_kept() -> None:
    hostile = "<script>alert(1)</script>\r\nX-Injected: 1 Firefox/1 " + "A" * 10_000
    code = device_code(hostile)
    assert code == "ff -" and len(code) <= 5
    assert device_label(code) == "Firefox"
    assert device_code(None) == "- -"
    # A code that is not from the vocabulary (a tampered record) still becomes nothing but known words.
    assert device_label("<b> <i>") == "Unknown device"
