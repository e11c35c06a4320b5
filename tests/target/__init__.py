"""tests/target: the harness's own tests."""
