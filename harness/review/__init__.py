"""``harness review`` and ``harness repro``: from a posted patch to a reply a reviewer can post.

* :mod:`~harness.review.series` -- the patch found in a mail, mbox, web page
  or .patch, made the top of a temporary series;
* :mod:`~harness.review.diff` -- unified diffs as data: a tree line traced
  back to the patch hunk it comes from, hunks quoted with ``> ``;
* :mod:`~harness.review.buildcheck` -- each config built, a failed build's
  log read into problems;
* :mod:`~harness.review.oops` -- kernel reports: EIP and call trace, through
  ``System.map`` and a ``-g`` compile of one file to source lines;
* :mod:`~harness.review.locate` -- the patch line a problem or bug comes from;
* :mod:`~harness.review.bugs` -- failing tests grouped into distinct bugs;
* :mod:`~harness.review.repro` -- reproducer scripts from the guest commands
  the tests ran (:mod:`harness.results.guestlog`);
* :mod:`~harness.review.render` -- ``review.txt`` and the bug rows of ``index.html``;
* :mod:`~harness.review.run` -- the command: all of it, into a results directory;
* :mod:`~harness.review.reprocmd` -- ``harness repro NODEID``.
"""
