"""tests: the harness's own tests."""
