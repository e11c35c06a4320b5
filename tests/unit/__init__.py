"""tests/unit: the harness's own tests."""
