"""Test suites that run inside a booted guest (shipped with the harness)."""
