"""``make fuzz``: one target, coverage-guided, under libFuzzer (atheris).

    python -m tests.fuzz.run <target> [corpus dirs...] [libFuzzer flags, e.g. -max_total_time=60]

The gateway's modules are instrumented for coverage; the harness and the libraries are not.
"""

from __future__ import annotations

import sys

import atheris


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m tests.fuzz.run <target> [corpus dirs...] [libFuzzer flags]")
    name = sys.argv[1]
    with atheris.instrument_imports(include=["longread_server"]):
        from tests.fuzz.targets import TARGETS
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
