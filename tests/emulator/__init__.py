"""Tests of the Kryptos emulator (bff.emulator)."""
