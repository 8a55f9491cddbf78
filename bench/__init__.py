"""The hot-path benchmark (``bench/run``): a script that prints numbers, never part of the test suite."""
