"""The guest machine: QEMU, its console, saved boots, QMP and SSH."""
