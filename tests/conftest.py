"""The suite's shared fixtures live in ``tests/support/fixtures.py``; this registers them."""

pytest_plugins = ["tests.support.fixtures", "tests.support.postgres"]
