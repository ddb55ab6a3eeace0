"""Command line: ``python -m metalib {info,download,train,evaluate,assign,grade}``.

* ``info``: versions, the device metalib will use, quick mode, where the data is and whether
  Omniglot is found and decoded.
* ``download omniglot``: fetch (if missing), verify and decode Omniglot into the cache, and fetch and
  verify Lake et al.'s one-shot runs (``all_runs.zip``).
* ``train protonet|matching --ways N --shots K ...``: episodic training on Omniglot (notebooks 03, 04);
  saves a checkpoint that ``evaluate`` and `metalib.metric_train.load_metric` read.
* ``evaluate CHECKPOINT --ways N --shots K --episodes 600``: test accuracy ± 95% CI of a ProtoNet,
  Matching Net or MAML-family model (`metalib.checkpoint_eval`); ``--split lake-runs``: the error on
  Lake et al.'s 20 official runs (`metalib.data.lake_runs`); several ProtoNet checkpoints: their
  ensemble; ``--tta COPIES``: test-time augmentation, `metalib.ensemble`.
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
    for name in (*omniglot.ZIP_NAMES, "all_runs"):
        path = omniglot.find_zip(name)
        print(f"  {name}.zip: {path if path else 'missing (run: python -m metalib download omniglot)'}")
    cache = omniglot.cache_path()
    print(f"  decoded cache: {cache} ({'present' if cache.is_file() else 'not built yet'})")
    return 0


def _download(args) -> int:
    from .data.lake_runs import download_runs
    from .data.omniglot import OmniglotError, load_omniglot

    if args.dataset != "omniglot":
        print(f"unknown dataset {args.dataset!r}; available: omniglot", file=sys.stderr)
        return 2
    try:
        data = load_omniglot(args.root, download=True)
        runs = download_runs(args.root)
    except OmniglotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Omniglot ready: {data.n_chars} characters x {data.images.shape[1]} drawings, "
          f"{len(data.alphabet_names)} alphabets; Lake et al.'s 20 one-shot runs: {runs}")
    return 0


def _train(args) -> int:
    from .config import maybe_quick
    from .device import get_device
    from .metric_train import MetricConfig, train_metric
    from .train import TrainConfig

    similarity = args.similarity or ("euclidean" if args.method == "protonet" else "cosine")
    try:
        cfg = MetricConfig(args.method, args.ways, args.shots, args.queries, similarity=similarity,
                           fce=args.fce, split=args.split, hidden=args.hidden,
                           train=TrainConfig(steps=args.steps, meta_batch=args.meta_batch, lr=args.lr,
                                             eval_every=args.eval_every, seed=args.seed))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = maybe_quick(cfg)
    out = args.out or f"{args.method}_{args.split}_{args.ways}w{args.shots}s.pt"
    command = "python -m metalib " + " ".join(args.argv)
    model, history = train_metric(cfg, device=get_device(args.device), checkpoint=out, command=command)
    val = history.val[-1]["acc"] if history.val else float("nan")
    print(f"{len(history.train)} steps ({history.stopped}) in {history.train[-1]['time'] if history.train else 0:.0f} s;"
          f" validation {cfg.val_ways}-way 1-shot accuracy {100 * val:.1f}%; saved {out}")
    print(f"evaluate it: python -m metalib evaluate {out} --ways 5 --shots 1 --episodes 600")
    return 0


def _evaluate(args) -> int:
    import torch

    from .checkpoint_eval import LAKE_RUNS, check_protocol, load_classifier, make_predictor
    from .data.omniglot import OmniglotError
    from .device import get_device

    device = get_device(args.device)
    try:
        loaded = [load_classifier(c, device, inner_steps=args.inner_steps) for c in args.checkpoint]
        split = check_protocol(loaded, args.split, 20 if args.split == LAKE_RUNS else args.ways)
        predict = make_predictor(loaded, copies=args.tta)
        if split == LAKE_RUNS:
            from .data.lake_runs import load_lake_runs
            runs = load_lake_runs(size=loaded[0].image_size)
        else:
            from .metric_train import test_sampler
            sampler = test_sampler(args.ways, args.shots, split=split, within_alphabet=args.within_alphabet,
                                   device=device, image_size=loaded[0].image_size)
    except (FileNotFoundError, ValueError, TypeError, OmniglotError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = " + ".join(args.checkpoint) + (f" (test-time augmentation: {args.tta} copies)" if args.tta else "")
    steps = {c.steps for c in loaded} - {None}
    what += f" after {steps.pop()} inner steps" if steps else ""
    for m in loaded:
        m.model.eval()
    with torch.no_grad():  # MAML's inner loop turns gradients back on for itself
        if split == LAKE_RUNS:
            from .data.lake_runs import score_runs
            print(f"{what}: Lake et al.'s 20 official runs (20-way 1-shot within one alphabet): "
                  f"{score_runs(predict, runs, device)}")
            return 0
        from .evaluate import evaluate_accuracy
        acc = evaluate_accuracy(predict, sampler, episodes=args.episodes, batch_size=20, seed=args.seed,
                                desc=f"{args.ways}-way {args.shots}-shot")
    protocol = f"{split}{' within-alphabet random episodes' if args.within_alphabet else ''}"
    print(f"{what}: {args.ways}-way {args.shots}-shot ({protocol} test, {sampler.n_query} queries/class): "
          f"accuracy {100 * acc.mean:.2f} ± {100 * acc.ci95:.2f}% (95% CI, {acc.episodes} episodes)")
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
    from .grading import Assignment, SandboxUnavailable, grade_folder

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
                               submission_timeout=args.submission_timeout, jobs=args.jobs,
                               isolate=not args.no_sandbox, seed=args.seed)
    except (ValueError, SandboxUnavailable) as err:
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
    p = sub.add_parser("train", help="train a ProtoNet or Matching Net on Omniglot episodes")
    p.add_argument("method", choices=["protonet", "matching"])
    p.add_argument("--ways", type=int, default=20, help="classes per training episode (N)")
    p.add_argument("--shots", type=int, default=1, help="support examples per class (K)")
    p.add_argument("--queries", type=int, default=5, help="query examples per class (Q)")
    p.add_argument("--similarity", default=None,
                   help="protonet: euclidean (default) | dot; matching: cosine (default) | dot")
    p.add_argument("--fce", action="store_true", help="Matching Nets' full-context embeddings")
    p.add_argument("--split", choices=["vinyals", "lake"], default="vinyals")
    p.add_argument("--hidden", type=int, default=64, help="Conv-4 filters per block")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--meta-batch", type=int, default=1, help="episodes per Adam step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay to 0)")
    p.add_argument("--eval-every", type=int, default=1000, help="validate every this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: METALIB_DEVICE or the best available)")
    p.add_argument("--out", default=None, help="checkpoint path (default METHOD_SPLIT_NwKs.pt)")
    p.set_defaults(func=_train)
    p = sub.add_parser("evaluate", help="test accuracy ± 95%% CI of a ProtoNet, Matching Net or MAML-family checkpoint")
    p.add_argument("checkpoint", nargs="+",
                   help="a file from `train`, `metric.py` or `maml_accuracy.py` (bare names are also looked up in "
                        "data/checkpoints/); several ProtoNet checkpoints: their ensemble (mean log-probabilities, "
                        "`metalib.ensemble`)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--split", choices=["vinyals", "random", "lake", "lake-runs"], default=None,
                   help="test classes of this split (default: the split the model was trained on); lake-runs: "
                        "Lake et al.'s 20 official 20-way 1-shot runs (400 trials; --ways/--shots/--episodes unused)")
    p.add_argument("--within-alphabet", action="store_true",
                   help="random episodes with all N classes from one alphabet (harder than, and not comparable "
                        "with, Lake et al.'s runs)")
    p.add_argument("--inner-steps", type=int, default=None,
                   help="MAML family: test-time inner steps (default: the model's own)")
    p.add_argument("--seed", type=int, default=1234, help="seeds the test episodes")
    p.add_argument("--tta", type=int, default=0, metavar="COPIES",
                   help="test-time augmentation (ProtoNets): average each embedding over COPIES random distortions")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_evaluate)
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
    p.add_argument("--seed", type=int, default=None, help="hidden inputs' seed (default: drawn now; the report gives it)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="grade without bubblewrap (macOS, Windows): submissions are then NOT isolated")
    p.set_defaults(func=_grade)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
