"""ID and logout token verification (:mod:`bff.oidc.jose`): which signing algorithms are accepted at all."""

from __future__ import annotations

from bff.oidc.jose import signing_algs


def test_only_asymmetric_signing_algorithms_are_accepted() -> None:
    assert signing_algs(["none", "RS256", "HS256", "ES256"]) == ("RS256", "ES256")
    assert signing_algs(["HS256", "HS512"]) == ("RS256",)  # nothing left: RS256, which every provider supports
    assert signing_algs(["none"]) == ("RS256",)
    assert signing_algs(None) == ("RS256",)
    assert signing_algs("RS256 none") == ("RS256",)
    assert signing_algs(["PS256", "EdDSA", "RS512"]) == ("PS256", "EdDSA", "RS512")
