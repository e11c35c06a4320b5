"""tests/integration: the harness's own tests."""
