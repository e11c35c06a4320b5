"""Patch coverage: which lines a patch series adds were executed by a run's guests.

No kernel instrumentation: QEMU's TCG logs every guest instruction the first
time it translates it (``-d in_asm``), restricted to the functions that hold
code of the added lines (``-dfilter``); the kernel's DWARF line table maps
instructions back to source lines.

* :mod:`~harness.coverage.flavour`: the ``--set`` overrides that give a kernel
  debug info without changing its code;
* :mod:`~harness.coverage.added`: the lines the series adds (patched file
  against the pristine 2.6.20 file);
* :mod:`~harness.coverage.debuginfo`: functions, instructions and their inline
  chains of source lines, read with binutils (``nm``, ``objdump``, ``addr2line``);
* :mod:`~harness.coverage.plan`: per kernel, the executable added lines, their
  instructions and the trace ranges (``plan.json``); each VM's log file;
* :mod:`~harness.coverage.report`: the union over every VM of a run:
  ``coverage.json``; :mod:`~harness.coverage.page`: ``coverage.html``.
"""
