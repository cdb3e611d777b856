"""Rewrite the analyzer-result schema section of docs/run-file.md from the dataclasses.

Run from the repository root with the project's virtualenv:

    .venv/bin/python docs/make_results_schema.py          # rewrite the section
    .venv/bin/python docs/make_results_schema.py --check  # exit 1 if it is out of date

The section lies between ``<!-- results:begin -->`` and ``<!-- results:end -->``; its text
is :func:`inspector.analyzers.results_schema_markdown` (tests/unit/test_store.py checks it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.analyzers import results_schema_markdown

DOC = Path(__file__).resolve().parent / "run-file.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def current_section(text: str) -> str:
    """The text between the markers (without them)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"{DOC} must hold {BEGIN} and {END} once each")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    wanted = "\n" + results_schema_markdown() + "\n"
    if current_section(text) == wanted:
        return 0
    if args.check:
        print(f"{DOC} is out of date: run docs/make_results_schema.py", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + wanted + END + rest.split(END, 1)[1], encoding="utf-8")
    print(f"rewrote the result schema in {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
