"""Kernel stages: source, patches, config, build, and importing a posted patch."""
