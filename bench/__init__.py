"""Benchmarks of domino-sync side by side with rsync and cp: `python -m bench [--quick]`.

Each case (`bench.cases.*`) measures domino-sync and, where it has a counterpart, `rsync -a` and `cp -a` in
the same run, alternating their order round by round, and returns table rows of medians and ratios.
See bench/README.md for what each figure measures and what bounds it.
"""

from __future__ import annotations
