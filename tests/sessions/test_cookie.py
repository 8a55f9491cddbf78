"""The session cookie's value (:mod:`bff.sessions.cookie`): a signed random id, verified under rotating keys."""

from __future__ import annotations

import hashlib
import re

import pytest
from itsdangerous import Signer

from bff.sessions.cookie import SignedValueCodec, new_session_id

OLD, NEW = "o" * 32, "n" * 32


def test_a_signed_value_unsigns_to_itself() -> None:
    codec = SignedValueCodec([NEW], salt="bff.session")
    session_id = new_session_id()
    signed = codec.sign(session_id)
    assert signed.startswith(session_id + ".") and len(signed) > len(session_id) + 40
    assert codec.unsign(signed) == session_id


@pytest.mark.parametrize("value", [None, "", "no-signature-at-all", "abc.", ".abc"])
def test_missing_or_unsigned_values_are_none(value: str | None) -> None:
    assert SignedValueCodec([NEW], salt="bff.session").unsign(value) is None


def test_tampering_with_the_id_or_the_signature_is_detected() -> None:
    codec = SignedValueCodec([NEW], salt="bff.session")
    signed = codec.sign("session-a")
    value, _, signature = signed.rpartition(".")
    assert codec.unsign(f"session-b.{signature}") is None
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert codec.unsign(f"{value}.{flipped}") is None
    assert codec.unsign(signed + "x") is None
    assert codec.unsign(signed.upper()) is None


def test_the_salt_separates_purposes() -> None:
    # The login-binding cookie is signed with the same secrets: it must never pass as a session cookie.
    binding = SignedValueCodec([NEW], salt="bff.login-binding").sign("same-id")
    assert SignedValueCodec([NEW], salt="bff.session").unsign(binding) is None


def test_a_key_rotated_in_signs_and_the_old_one_still_verifies_until_removed() -> None:
    before = SignedValueCodec([OLD], salt="bff.session").sign("signed-before")
    rotated = SignedValueCodec([NEW, OLD], salt="bff.session")
    assert rotated.unsign(before) == "signed-before"  # nobody is logged out by adding a key ...
    after = rotated.sign("signed-after")
    assert SignedValueCodec([NEW], salt="bff.session").unsign(after) == "signed-after"  # ... the newest signs
    assert SignedValueCodec([OLD], salt="bff.session").unsign(after) is None
    # ... and removing the old key ends what it signed.
    assert SignedValueCodec([NEW], salt="bff.session").unsign(before) is None


def test_oversized_values_are_refused_before_any_hmac() -> None:
    codec = SignedValueCodec([NEW], salt="bff.session")
    fits = codec.sign("x" * 200)
    assert len(fits) <= 256 and codec.unsign(fits) == "x" * 200
    too_long = codec.sign("x" * 250)  # validly signed, but longer than any cookie bff sets
    assert len(too_long) > 256 and codec.unsign(too_long) is None


def test_a_codec_needs_a_secret_and_never_shows_them() -> None:
    with pytest.raises(ValueError, match="at least one signing secret"):
        SignedValueCodec([], salt="bff.session")
    codec = SignedValueCodec([NEW, OLD], salt="bff.session")
    assert NEW not in repr(codec) and OLD not in repr(codec)


def test_session_ids_are_256_random_bits_url_safe() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", i) for i in ids)


def test_values_signed_by_itsdangerous_itself_verify_and_nothing_else_does() -> None:
    # unsign checks with keys derived once (bff.sessions.cookie); cookies signed before that, by itsdangerous's
    # own Signer with the same settings, must still verify, under each listed key; others must not.
    old, new = "o" * 40, "n" * 40
    codec = SignedValueCodec([new, old], salt="bff.session")
    for key in (new, old):
        signer = Signer(key, salt="bff.session", digest_method=hashlib.sha256, key_derivation="hmac")
        signed = signer.sign("session-id").decode()
        assert codec.unsign(signed) == "session-id"
        assert codec.unsign(signed.replace("session-id", "session-iD")) is None
    other = Signer("x" * 40, salt="bff.session", digest_method=hashlib.sha256, key_derivation="hmac")
    assert codec.unsign(other.sign("session-id").decode()) is None
    assert codec.unsign("session-id.!!not-base64!!") is None
