"""The rcfs suite: mount options, tasks files, rmdir, attach permissions, stress, leaks."""
