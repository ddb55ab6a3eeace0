"""First-order MAML side by side: metalib's FOMAML against learn2learn's ``MAML(first_order=True)``.

Is a low FOMAML accuracy the code or the recipe? Every contender trains the same Conv-4 (64 filters,
per-task BatchNorm statistics, the same initial weights) on the same Omniglot meta-batches (published
Vinyals split, N-way K-shot, the same sampler seed, so the same tasks in the same order) with the same
outer optimiser (Adam), inner learning rate α and inner steps k, and is validated every ``--eval-every``
meta-steps on the same fixed validation tasks (query accuracy after ``--eval-steps`` first-order steps
at α, each contender adapting with its own code). One table: validation accuracy of each contender
after each number of meta-steps, and the wall time each took.

Contenders (each in its own process, ``--jobs`` at a time):

* ``metalib``: `metalib.maml_train.MAMLLearner` (method "fomaml", per-task loop, backward per task),
  the code every shipped checkpoint is trained with;
* ``learn2learn``: ``learn2learn.algorithms.MAML(net, lr=α, first_order=True)`` exactly as its Omniglot
  example uses it (``clone()``, ``adapt()`` k times, one ``backward()`` per task); needs learn2learn
  (``--l2l-python``: an environment that has it, see ``benchmarks/setup_l2l_env.sh``; or ``--l2l-path``:
  a folder holding its source, of which only ``algorithms/maml.py`` and its torch-only helpers load);
* ``plain``: a hand-written per-task loop (deep copy of the network, ``torch.optim.SGD`` k steps on the
  support set, the query gradient at the adapted copy added into the shared network's ``.grad``), the
  definition of FOMAML with nothing shared with either library.

Run: ``python benchmarks/first_order.py [--steps 300] [--eval-every 50] [--meta-batch 16] [--inner-steps 1]
[--inner-lr 0.4] [--contenders metalib learn2learn plain] [--jobs 1] [--time-budget S] [--l2l-path DIR] [--out FILE]``
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import metalib  # noqa: E402
from metalib.maml_train import MAMLConfig, MAMLLearner, evaluate_maml, task_sampler  # noqa: E402
from metalib.nets import Conv4  # noqa: E402
from _report import emit, machine  # noqa: E402  (benchmarks/_report.py)

CONTENDERS = ("metalib", "learn2learn", "plain")


def _net(args) -> Conv4:
    torch.manual_seed(args.seed)
    return Conv4(hidden=args.hidden, n_classes=args.ways, running_stats=False)


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(-1) == y).float().mean())


def _l2l_maml():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from maml_speed import import_l2l_maml  # the installed learn2learn's algorithms/maml.py, unchanged
    return import_l2l_maml()


def contender(name: str, args):
    """``(parameters, meta_step(task) -> train query accuracy, validate(tasks) -> accuracy)`` of one contender."""
    net, alpha, k, e = _net(args), args.inner_lr, args.inner_steps, args.eval_steps
    if name == "metalib":
        learner = MAMLLearner(net, "fomaml", alpha, k, strategy="loop", chunk=1)

        def step(task):
            _, out = learner.meta_backward(task)
            return _accuracy(out, task.y_query)

        def validate(tasks):
            return evaluate_maml(learner, lambda b: tasks, steps=(e,), episodes=tasks.batch_size,
                                 batch_size=tasks.batch_size)[e].mean
        return learner.parameters(), step, validate
    if name == "learn2learn":
        maml = _l2l_maml()(net, lr=alpha, first_order=True)

        def run(task, steps, train):
            accs = []
            for b in range(task.batch_size):
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(F.cross_entropy(learner(task.x_support[b]), task.y_support[b]))
                out = learner(task.x_query[b])
                if train:
                    (F.cross_entropy(out, task.y_query[b]) / task.batch_size).backward()
                accs.append(_accuracy(out, task.y_query[b]))
            return sum(accs) / len(accs)
        return maml.parameters(), lambda task: run(task, k, True), lambda tasks: run(tasks, e, False)
    if name == "plain":
        def run(task, steps, train):
            accs = []
            for b in range(task.batch_size):
                clone = copy.deepcopy(net)
                sgd = torch.optim.SGD(clone.parameters(), lr=alpha)
                for _ in range(steps):
                    sgd.zero_grad()
                    F.cross_entropy(clone(task.x_support[b]), task.y_support[b]).backward()
                    sgd.step()
                clone.zero_grad()
                out = clone(task.x_query[b])
                if train:  # FOMAML: the query gradient at the adapted weights is the meta-gradient
                    F.cross_entropy(out, task.y_query[b]).backward()
                    for p, q in zip(net.parameters(), clone.parameters()):
                        p.grad = q.grad / task.batch_size if p.grad is None else p.grad + q.grad / task.batch_size
                accs.append(_accuracy(out.detach(), task.y_query[b]))
            return sum(accs) / len(accs)
        return net.parameters(), lambda task: run(task, k, True), lambda tasks: run(tasks, e, False)
    raise ValueError(f"contender must be one of {CONTENDERS}, got {name!r}")


def worker(name: str, args) -> dict:
    """Train one contender; its validation curve and timings as a dict (printed as JSON)."""
    cfg = MAMLConfig("fomaml", n_way=args.ways, k_shot=args.shots, n_query=args.queries)
    data = metalib.load_omniglot()
    sample = task_sampler(cfg, "train", device="cpu", data=data, seed=args.seed)
    val = task_sampler(cfg, "val", device="cpu", data=data, seed=0)(args.val_episodes)
    params, step, validate = contender(name, args)
    opt = torch.optim.Adam(params, lr=args.meta_lr)
    curve, train_acc, start, t_train = [], [], time.perf_counter(), 0.0
    for i in range(1, args.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        train_acc.append(step(sample(args.meta_batch)))
        opt.step()
        t_train += time.perf_counter() - t0
        out_of_time = args.time_budget is not None and t_train >= args.time_budget
        if i % args.eval_every == 0 or i == args.steps or out_of_time:
            with torch.enable_grad():
                acc = validate(val)
            window = train_acc[-args.eval_every:]
            curve.append({"step": i, "val": acc, "train": sum(window) / len(window), "seconds": t_train})
            print(f"{name}: step {i} validation {acc:.4f}", file=sys.stderr, flush=True)
        if out_of_time:
            break
    source = sys.modules[_l2l_maml().__module__].__file__ if name == "learn2learn" else None
    return {"name": name, "curve": curve, "seconds": time.perf_counter() - start, "source": source}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="meta-steps per contender")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--meta-batch", type=int, default=16)
    ap.add_argument("--inner-steps", type=int, default=1, help="k, during meta-training")
    ap.add_argument("--inner-lr", type=float, default=0.4, help="α")
    ap.add_argument("--eval-steps", type=int, default=3, help="first-order steps at validation")
    ap.add_argument("--meta-lr", type=float, default=1e-3, help="Adam's learning rate (outer loop)")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--queries", type=int, default=5, help="query examples per class during training")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--val-episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="initial weights and training tasks")
    ap.add_argument("--contenders", nargs="+", default=["metalib", "learn2learn"], choices=CONTENDERS)
    ap.add_argument("--jobs", type=int, default=1, help="contenders trained at once (each in its own process)")
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="stop each contender after this many seconds of training (validating then)")
    ap.add_argument("--l2l-python", default=sys.executable, help="a Python whose path has learn2learn")
    ap.add_argument("--l2l-path", default=None, help="folder put first on learn2learn's PYTHONPATH (its source)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        print(json.dumps(worker(args.worker, args)), flush=True)
        return 0

    argv = [a for a in sys.argv[1:]]
    load = os.getloadavg()[0]
    print(f"Machine: {machine()}; load average {load:.2f}.", flush=True)
    procs, results, pending = {}, {}, list(args.contenders)
    while pending or procs:
        while pending and len(procs) < args.jobs:
            name = pending.pop(0)
            l2l = name == "learn2learn"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in ((args.l2l_path if l2l else None), str(ROOT)) if p)}
            py = args.l2l_python if l2l else sys.executable
            procs[name] = subprocess.Popen([py, __file__, *argv, "--worker", name], env=env,
                                           stdout=subprocess.PIPE, text=True)
        name, proc = next(iter(procs.items()))
        out, _ = proc.communicate()
        del procs[name]
        if proc.returncode:
            print(f"{name} failed (exit {proc.returncode}); see its messages above", flush=True)
            continue
        results[name] = json.loads(out.strip().splitlines()[-1])

    names = [n for n in args.contenders if n in results]
    label = {"metalib": "metalib FOMAML", "learn2learn": "learn2learn MAML(first_order=True)",
             "plain": "plain per-task loop"}
    rows = [f"| meta-step | " + " | ".join(f"{label[n]} val (train)" for n in names) + " |",
            "|---" * (1 + len(names)) + "|"]
    points = {n: {p["step"]: p for p in results[n]["curve"]} for n in names}
    for i in sorted({i for n in names for i in points[n]}):
        rows.append(f"| {i} | " + " | ".join(
            f"{100 * points[n][i]['val']:.1f} ({100 * points[n][i]['train']:.1f})" if i in points[n] else "–"
            for n in names) + " |")
    rows.append("| training seconds | " + " | ".join(f"{results[n]['curve'][-1]['seconds']:.0f}" for n in names) + " |")
    text = "\n".join([
        f"Machine: {machine()}; load average {load:.2f} at start (a shared machine: timings are indicative); "
        f"{datetime.date.today()}.", "",
        f"FOMAML, Omniglot {args.ways}-way {args.shots}-shot (published Vinyals split), Conv-4 ({args.hidden} filters), "
        f"meta-batch {args.meta_batch} tasks with {args.queries} queries per class, k = {args.inner_steps} inner "
        f"step(s) at α = {args.inner_lr}, Adam {args.meta_lr:g}, same initial weights and tasks for every contender. "
        f"Validation: query accuracy (%) on the same {args.val_episodes} validation tasks after {args.eval_steps} "
        f"first-order steps; in brackets the mean training query accuracy over the preceding meta-steps.", "",
        *rows, "", *(f"learn2learn's MAML: {results[n]['source']}" for n in names if results[n].get("source")),
        "Command: python benchmarks/first_order.py " + " ".join(argv)])
    emit(text, args.out)
    return 0 if len(results) == len(args.contenders) else 1


if __name__ == "__main__":
    sys.exit(main())
