"""bff: an OAuth 2.0 / OpenID Connect backend-for-frontend for the Kryptos Connect API."""

from bff.app import create_app
from bff.config import Settings

__all__ = ["Settings", "create_app"]
