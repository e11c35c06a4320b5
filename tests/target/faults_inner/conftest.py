"""Inner sessions of tests/target/test_faults.py: each ``inner_*.py`` provokes one fault.

Not collected by the project's own run (``python_files`` is ``test_*.py``);
test_faults.py runs each file in its own pytest process with
``-o python_files=inner_*.py``.  Nothing here: the harness plugin supplies the
fixtures (guest, kernel_vm).
"""
