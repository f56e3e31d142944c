"""Where the real request traces are: ``../shared/data/traces`` beside the checkout (CI clones
the repository next to ``shared``). Tests read them there, never from a copy in the repo."""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: src/openclaw/testing/traces.py -> the repository's root is three levels up.
TRACES: Final = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "traces"
NASA: Final = TRACES / "nasa_19950801.tsv"
