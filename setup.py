"""Build hook: compile the limiter's hot path with mypyc; the rest of the package stays Python.

The decision path must beat pure-Python peers several times over (bench/limiter.py); compiled,
the same strictly typed source runs about three times faster. Set OPENCLAW_PURE_PYTHON=1 to
build without a compiler (everything still works, only slower).
"""

import os

from setuptools import setup

HOT_MODULES = [
    "src/openclaw/limiter/core.py",
    "src/openclaw/limiter/memory.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("OPENCLAW_PURE_PYTHON"):
        return []
    from mypyc.build import mypycify

    return list(mypycify(HOT_MODULES, opt_level="3", debug_level="0"))


setup(ext_modules=ext_modules())
