"""The emulator's HTML: the sign-in chooser, error pages and the signed-out page.

Self-contained pages (inline CSS, no external resources); every value rendered is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from bff_dev.emulator.config import EmulatorUser

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#0f172a;
color:#0f172a;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;border-radius:14px;box-shadow:0 20px 50px rgba(0,0,0,.35);padding:28px 30px;
width:min(460px,92vw)}
h1{font-size:20px;margin:0 0 4px}
p.sub{margin:0 0 18px;color:#475569;font-size:14px}
.brand{display:flex;align-items:center;gap:10px;margin-bottom:16px;color:#4f46e5;font-weight:700}
.brand span{width:30px;height:30px;border-radius:8px;background:#4f46e5;color:#fff;display:inline-flex;
align-items:center;justify-content:center}
form.users button{width:100%;display:flex;justify-content:space-between;align-items:center;text-align:left;
border:1px solid #e2e8f0;background:#f8fafc;border-radius:10px;padding:10px 14px;margin:0 0 10px;
cursor:pointer;font:inherit}
form.users button:hover{border-color:#4f46e5;background:#eef2ff}
.name{font-weight:600;display:block}.uname{color:#64748b;font-size:13px}
.badge{font-size:12px;font-weight:600;border-radius:999px;padding:2px 10px}
.guest{background:#fef3c7;color:#92400e}.linked{background:#dcfce7;color:#166534}
button.deny{width:100%;border:0;background:none;color:#b91c1c;padding:8px;cursor:pointer;font:inherit}
.meta{margin-top:14px;font-size:12px;color:#94a3b8;word-break:break-all}
.error{color:#b91c1c;font-weight:600}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        '<div class="brand"><span>K</span>Kryptos emulator</div>'
        f"{body}</main></body></html>"
    )


def _hidden(params: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in params.items()
    )


def login_page(*, action: str, client_id: str, params: Mapping[str, str], users: Iterable[EmulatorUser]) -> str:
    buttons = []
    for user in users:
        kind = "guest" if user.is_guest else "linked"
        buttons.append(
            f'<button type="submit" name="username" value="{escape(user.username)}">'
            f'<span><span class="name">{escape(user.name)}</span>'
            f'<span class="uname">{escape(user.username)} · {escape(user.email)}</span></span>'
            f'<span class="badge {kind}">{"Guest" if user.is_guest else "Linked"}</span></button>'
        )
    body = (
        "<h1>Sign in</h1>"
        f'<p class="sub">Choose a test user to continue to <b>{escape(client_id)}</b>.</p>'
        f'<form class="users" method="post" action="{escape(action)}">{_hidden(params)}{"".join(buttons)}'
        '<button class="deny" type="submit" name="deny" value="1">Deny</button></form>'
        f'<div class="meta">Requested scopes: {escape(params.get("scope", ""))}</div>'
    )
    return _page("Sign in · Kryptos emulator", body)


def error_page(error: str, description: str) -> str:
    body = (
        '<h1>Request rejected</h1><p class="sub">The authorization server cannot continue.</p>'
        f'<p class="error">{escape(error)}</p><p>{escape(description)}</p>'
    )
    return _page("Error · Kryptos emulator", body)


def signed_out_page() -> str:
    return _page(
        "Signed out · Kryptos emulator",
        '<h1>Signed out</h1><p class="sub">Your session at the Kryptos emulator has ended.</p>',
    )


_PALETTE = ("#f0b90b", "#0052ff", "#5741d9", "#f6851b", "#627eea", "#f7931a", "#14f195", "#8247e5", "#e11d48")


def logo_svg(provider: str) -> str:
    """A generated logo: a coloured circle with the provider's initials (nothing fetched from outside)."""
    colour = _PALETTE[sum(provider.encode()) % len(_PALETTE)]
    initials = escape((provider[:2] or "?").upper())
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<circle cx="32" cy="32" r="32" fill="{colour}"/>'
        '<text x="32" y="40" text-anchor="middle" font-family="Arial,sans-serif" font-size="24" '
        f'font-weight="700" fill="#fff">{initials}</text></svg>'
    )
