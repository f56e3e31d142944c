"""``python bench/limiter.py [args]`` is ``openclaw bench limiter [args]``.

The benchmark lives in the package (``openclaw.bench.limiter``) so the CLI works from an
installed wheel; this script only forwards its arguments to the same typer command.
"""

from __future__ import annotations

import sys

from openclaw.cli import app

if __name__ == "__main__":
    app(["bench", "limiter", *sys.argv[1:]], prog_name="openclaw")
