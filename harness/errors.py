"""Error types shared by every stage.

Each error carries the process exit code the CLI uses for it:

* ``InputError`` (2): the user gave something the harness cannot use
  (unknown config, malformed ``--set``, missing source path...).  Nothing is
  written to the cache when one is raised.
* ``StageError`` (2): a stage failed on valid input (a patch does not apply,
  the kernel does not compile, the VM does not boot).
* ``InfraError`` (2): the machinery failed (QEMU died, SSH dropped, timeout);
  a test that hits one is reported as an ERROR, never as a FAIL.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: a failure the CLI reports in one line, without a traceback."""

    exit_code = 2


class InputError(HarnessError):
    """Bad user input: names the input and what was expected."""


class StageError(HarnessError):
    """A stage (source, patches, config, build, image, boot) failed."""


class InfraError(HarnessError):
    """Infrastructure failure: VM, SSH or timeout, as opposed to a test verdict."""
