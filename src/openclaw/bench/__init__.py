"""Benchmarks against peers measured in the same run (``openclaw bench ...``).

Only constants live here: the CLI imports this package to build its ``--help``, and the
benchmark modules pull in their peers (``limits``, ``pyrate-limiter``, ``redis``) only when
a benchmark actually runs.
"""

from __future__ import annotations

from typing import Final

#: Seconds each contender runs per round. Small enough that the default in-process run
#: (5 contenders, 2 workloads, 5 rounds) takes about ten seconds on a 2-core machine.
LIMITER_DURATION_S: Final = 0.2
#: Rounds per contender; the report is the median, so an odd number avoids averaging.
LIMITER_ROUNDS: Final = 5
