"""Command line: ``python -m metalib {info,download,assign,grade}``.

* ``info``: versions, the device metalib will use, quick mode, where the data is and whether
  Omniglot is found and decoded.
* ``download omniglot``: fetch (if missing), verify and decode Omniglot into the cache.
* ``assign``: regenerate the student notebooks from solutions/ (``--check`` only reports stale
  ones; ``--autograder DIR`` also writes the autograder zips there).
* ``grade FOLDER --assignment NAME``: grade every submitted notebook in FOLDER without Docker;
  writes ``grades.csv`` and ``report.md`` into ``--out`` (default ``grades-NAME/``).
"""
from __future__ import annotations

import argparse
import platform
import sys


def _info(_args) -> int:
    import torch

    from . import __version__
    from .config import is_quick
    from .data import omniglot
    from .device import get_device

    print(f"metalib {__version__}  python {platform.python_version()}  torch {torch.__version__}  "
          f"platform {platform.platform()}")
    print(f"device: {get_device()}  (cuda available: {torch.cuda.is_available()})  quick mode: {is_quick()}")
    root = omniglot.data_root()
    print(f"data folder: {root}")
    for name in omniglot.ZIP_NAMES:
        path = omniglot.find_zip(name)
        print(f"  {name}.zip: {path if path else 'missing (run: python -m metalib download omniglot)'}")
    cache = omniglot.cache_path()
    print(f"  decoded cache: {cache} ({'present' if cache.is_file() else 'not built yet'})")
    return 0


def _download(args) -> int:
    from .data.omniglot import OmniglotError, load_omniglot

    if args.dataset != "omniglot":
        print(f"unknown dataset {args.dataset!r}; available: omniglot", file=sys.stderr)
        return 2
    try:
        data = load_omniglot(args.root, download=True)
    except OmniglotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Omniglot ready: {data.n_chars} characters x {data.images.shape[1]} drawings, "
          f"{len(data.alphabet_names)} alphabets")
    return 0


def _assign(args) -> int:
    from .assignments import NOTEBOOKS, regenerate, stale_notebooks

    if args.check:
        stale = stale_notebooks()
        if stale:
            print(f"stale student notebooks in {NOTEBOOKS}: {stale}; run `python -m metalib assign`", file=sys.stderr)
            return 1
        print("student notebooks are up to date")
        return 0
    for path in regenerate(args.names or None, autograder_dir=args.autograder):
        print(f"wrote {path}")
    if args.autograder:
        print(f"autograder zips in {args.autograder}")
    return 0


def _grade(args) -> int:
    from pathlib import Path

    from .assignments import masters
    from .grading import Assignment, grade_folder

    try:
        found = masters([args.assignment])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(found) > 1:
        print(f"error: --assignment {args.assignment!r} matches {[m.stem for m in found]}; give a longer prefix",
              file=sys.stderr)
        return 2
    master = found[0]
    out = Path(args.out or f"grades-{master.stem}")
    try:
        results = grade_folder(args.folder, Assignment.from_master(master), out=out, timeout=args.timeout,
                               submission_timeout=args.submission_timeout, jobs=args.jobs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        flag = f"  FLAGGED: {r.flags}" if r.flags else ""
        print(f"{r.student:30s} {r.total:6.2f}  {r.status}{flag}")
    print(f"wrote {out / 'grades.csv'} and {out / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, data").set_defaults(func=_info)
    p = sub.add_parser("download", help="download, verify and decode a dataset")
    p.add_argument("dataset", choices=["omniglot"])
    p.add_argument("--root", default=None, help="data folder (default: METALIB_DATA or the project's data/)")
    p.set_defaults(func=_download)
    p = sub.add_parser("assign", help="regenerate student notebooks from solutions/")
    p.add_argument("names", nargs="*", help="notebook prefixes, e.g. 00 01 (default: all)")
    p.add_argument("--autograder", metavar="DIR", default=None, help="also write autograder zips into DIR")
    p.add_argument("--check", action="store_true", help="only report stale notebooks (exit 1 if any)")
    p.set_defaults(func=_assign)
    p = sub.add_parser("grade", help="grade a folder of submitted notebooks (no Docker)")
    p.add_argument("folder", help="folder of submissions: every file is one student's notebook")
    p.add_argument("--assignment", "-a", required=True, help="master notebook name or prefix, e.g. 06")
    p.add_argument("--out", default=None, help="where grades.csv and report.md go (default grades-NAME/)")
    p.add_argument("--timeout", type=int, default=120, help="seconds per cell and per question's tests")
    p.add_argument("--submission-timeout", type=int, default=1800, help="seconds per submission, all included")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    p.set_defaults(func=_grade)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
