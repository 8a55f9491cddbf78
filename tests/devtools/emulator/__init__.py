"""Tests of the Kryptos emulator (bff_dev.emulator)."""
