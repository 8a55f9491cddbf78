"""bff: an OAuth 2.0 / OpenID Connect backend-for-frontend for the Kryptos Connect API.

The application is :func:`bff.app.create_app`; the command line is :mod:`bff.cli`; the README's "Layout"
section walks the modules in the order a request meets them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bff")  # the one version, pyproject.toml's
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
