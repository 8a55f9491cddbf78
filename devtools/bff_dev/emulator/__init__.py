"""The Kryptos emulator: an OpenID provider, the data API and the Connect API in one Starlette app.

For development and tests only; the BFF's production code never imports it and knows it only by URL.
"""

from __future__ import annotations

from bff_dev.emulator.app import create_emulator_app
from bff_dev.emulator.config import EmulatorClient, EmulatorConfig, EmulatorUser

__all__ = ["EmulatorClient", "EmulatorConfig", "EmulatorUser", "create_emulator_app"]
