"""Running suites: targets (build + image + VM), the cell matrix, bisecting."""
