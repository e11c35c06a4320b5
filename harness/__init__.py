"""Kernel-patch test harness: build Linux 2.6.20 with the rcfs patch, boot it, test it."""

__version__ = "0.1.0"
