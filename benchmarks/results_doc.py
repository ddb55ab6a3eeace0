"""Assemble docs/RESULTS.md from the markdown the benchmarks write into docs/results/.

Every benchmark writes its tables (machine line, tables, command) with ``--out docs/results/NAME.md``;
``make bench`` does that for the fast ones, then runs this script. docs/RESULTS.md holds the prose,
and for every part a block

    <!-- begin results/NAME.md -->
    (the part's text, replaced here)
    <!-- end results/NAME.md -->

whose content this script replaces by the part. A block without its part, a part without a block,
or a block that is never closed is an error: no table is dropped or left behind silently.
``--check`` writes nothing and exits 1 when docs/RESULTS.md differs from what its parts give
(``tests/test_docs.py`` runs that check).

Run: ``python benchmarks/results_doc.py [--check] [--doc docs/RESULTS.md] [--parts docs/results]``
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# markers stand on lines of their own (a marker quoted inside a line is text)
BEGIN = re.compile(r"^<!-- begin results/", re.M)
BLOCK = re.compile(r"^(<!-- begin results/(?P<name>[\w.-]+\.md) -->\n)(?P<body>.*?)^(<!-- end results/(?P=name) -->)$",
                   re.S | re.M)


def read_parts(folder: Path) -> dict[str, str]:
    """{file name: text} of every ``*.md`` part in ``folder``."""
    return {p.name: p.read_text() for p in sorted(Path(folder).glob("*.md"))}


def assemble(doc: str, parts: dict[str, str]) -> str:
    """``doc`` with every results block's content replaced by its part's text."""
    used: list[str] = []

    def fill(m: re.Match) -> str:
        name = m["name"]
        if name not in parts:
            raise KeyError(f"docs/RESULTS.md has a block for results/{name}, but there is no such part: run its "
                           f"benchmark with --out docs/results/{name}, or remove the block")
        used.append(name)
        return m.group(1) + parts[name].strip("\n") + "\n" + m.group(4)

    out = BLOCK.sub(fill, doc)
    if len(BEGIN.findall(doc)) != len(used):
        raise ValueError(f"{len(BEGIN.findall(doc))} '<!-- begin results/...' lines but {len(used)} complete blocks: every "
                         "'<!-- begin results/NAME.md -->' needs its '<!-- end results/NAME.md -->'")
    unused = sorted(set(parts) - set(used))
    if unused:
        raise ValueError(f"parts without a block in docs/RESULTS.md: {unused}; add "
                         "'<!-- begin results/NAME.md -->' and '<!-- end results/NAME.md -->' where each belongs")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "RESULTS.md")
    ap.add_argument("--parts", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the document is out of date")
    args = ap.parse_args()
    doc = args.doc.read_text()
    new = assemble(doc, read_parts(args.parts))
    if args.check:
        if new != doc:
            print(f"{args.doc} is out of date with {args.parts}/: run python benchmarks/results_doc.py")
            return 1
        return 0
    if new != doc:
        args.doc.write_text(new)
    print(f"{args.doc}: {len(read_parts(args.parts))} parts from {args.parts}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
