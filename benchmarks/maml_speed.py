"""MAML meta-step speed and memory: metalib's strategies against learn2learn, same model, data and machine.

The setting of issue 4: Conv-4 (64 filters, per-task BatchNorm statistics), Omniglot 5-way 1-shot with
15 queries per class, a meta-batch of 32 tasks, second order, k = 1 and 5 inner steps (α = 0.4). Every
contender runs in its own fresh process (so one cannot warm the other's caches or memory) on the same
initial weights and the same 32 tasks, and reports:

* seconds per meta-step (forward, inner loop, backward; median of ``--repeats`` after one warm-up; with
  ``--rounds R`` the whole list runs R times interleaved, and the median of the R rounds is reported with
  their range);
* peak memory of the tensors alive during one meta-step (`metalib.profiling.MemoryTracker`);
* FLOPs of one meta-step (``torch.utils.flop_counter``), hence the achieved GFLOP/s, against the
  machine's float32 matmul peak measured in the same run;
* the relative L2 error of its meta-gradient against metalib's per-task loop, and against the same
  meta-gradient computed in float64 (each contender's own float32 rounding error).
* on a CPU, the seconds spent in convolutions (one step under ``torch.profiler``): their floor. Even a
  contender whose every other operator were free could not beat learn2learn by more than learn2learn's
  time over that.

learn2learn runs from its own environment (``--l2l-python``, e.g. ``.venv-l2l/bin/python``; see
docs/RESULTS.md, "MAML meta-step speed", for how to build it) with ``l2l.algorithms.MAML`` exactly as its Omniglot example
uses it: ``clone()``, ``adapt()`` per task, one ``backward()`` per task. Without learn2learn, the row
"clone-and-adapt" reproduces that algorithm plainly (deep copy per task, autograd.grad, backward per task).

On a GPU (``--device cuda``, the default where one exists) every timed step ends with
``torch.cuda.synchronize()``, and the peak is float32 matmul (TF32 off) on that GPU. ``--l2l-path DIR``
puts a folder holding learn2learn's source first on the path (for a machine without its wheel: only
``algorithms/maml.py``, ``algorithms/base_learner.py`` and ``utils`` are imported).

Run: ``python benchmarks/maml_speed.py [--ks 1 5] [--tasks 32] [--repeats 3] [--rounds 1] [--device D] [--l2l-python PATH]
[--l2l-path DIR] [--out FILE]``
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metalib.nets import Conv4  # noqa: E402
from metalib.profiling import MemoryTracker, measure  # noqa: E402

ALPHA = 0.4


def _model(state) -> Conv4:
    net = Conv4(hidden=64, n_classes=5, running_stats=False)
    net.load_state_dict(state)
    return net


def step_reference():
    """The reference: `metalib.maml.meta_loss`'s per-task loop through ``torch.func.functional_call``."""
    from metalib import maml

    def run(net, task, k):
        fmodel, params = maml.functional(net)
        loss, _ = maml.meta_loss(fmodel, params, task, inner_lr=ALPHA, steps=k, strategy="loop")
        loss.backward()
    return run


def step_learner(strategy: str, chunk: int | None):
    """`metalib.maml_train.MAMLLearner.meta_backward` (what meta-training runs)."""
    from metalib.maml_train import MAMLLearner

    def run(net, task, k):
        MAMLLearner(net, "maml", ALPHA, k, strategy=strategy, chunk=chunk).meta_backward(task)
    return run


def import_l2l_maml():
    """``learn2learn.algorithms.maml.MAML``, the installed code, unchanged.

    ``import learn2learn`` runs its package ``__init__``, which imports torchvision, gym and its datasets.
    PyPI's torchvision wheels are CUDA builds that cannot load beside the CPU torch wheel used here, so
    when that import fails the two packages are registered bare and only ``algorithms/maml.py`` (with its
    ``base_learner`` and ``utils``: torch only) is imported from the installed learn2learn.
    """
    import importlib
    import importlib.util
    import types

    try:
        import learn2learn
        return learn2learn.algorithms.MAML
    except Exception:  # ImportError, or a vision/gym dependency broken in other ways
        for name in [m for m in sys.modules if m.startswith("learn2learn")]:
            del sys.modules[name]
    root = Path(importlib.util.find_spec("learn2learn").submodule_search_locations[0])
    for name, folder in (("learn2learn", root), ("learn2learn.algorithms", root / "algorithms")):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        sys.modules[name] = module
    return importlib.import_module("learn2learn.algorithms.maml").MAML


def step_l2l(net_holder: dict):
    """learn2learn's MAML as in its Omniglot example (one clone, adapt and backward per task)."""
    MAML = import_l2l_maml()

    def run(net, task, k):
        if net_holder.get("net") is not net:
            net_holder.update(net=net, maml=MAML(net, lr=ALPHA, first_order=False))
        m = net_holder["maml"]
        xs, ys, xq, yq = task
        T = xs.shape[0]
        for b in range(T):
            learner = m.clone()
            for _ in range(k):
                learner.adapt(F.cross_entropy(learner(xs[b]), ys[b]))
            (F.cross_entropy(learner(xq[b]), yq[b]) / T).backward()
    return run


def step_clone_adapt():
    """learn2learn's algorithm reproduced plainly: deep-copy the module, adapt with autograd.grad, backward per task."""
    def run(net, task, k):
        xs, ys, xq, yq = task
        T = xs.shape[0]
        for b in range(T):
            learner = copy.deepcopy(net)  # fresh module; its parameters become non-leaf functions of net's
            names = [n for n, _ in net.named_parameters()]
            theta = dict(net.named_parameters())
            for _ in range(k):
                out = torch.func.functional_call(learner, theta, (xs[b],))
                grads = torch.autograd.grad(F.cross_entropy(out, ys[b]), [theta[n] for n in names], create_graph=True)
                theta = {n: theta[n] - ALPHA * g for n, g in zip(names, grads)}
            (F.cross_entropy(torch.func.functional_call(learner, theta, (xq[b],)), yq[b]) / T).backward()
    return run


REFERENCE = "metalib.maml.meta_loss, per-task loop (reference)"
DEFAULT = "metalib MAMLLearner: loop, backward per task (CPU default)"
CONTENDERS = {
    REFERENCE: step_reference,
    DEFAULT: lambda: step_learner("loop", 1),
    "metalib MAMLLearner: loop, one backward": lambda: step_learner("loop", None),
    "metalib MAMLLearner: batched (grouped convs), one backward": lambda: step_learner("batched", None),
    "metalib MAMLLearner: batched, backward per 8 tasks": lambda: step_learner("batched", 8),
    "clone-and-adapt (learn2learn's algorithm, plain)": step_clone_adapt,
    "learn2learn MAML": lambda: step_l2l({}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(name: str, setup: str, k: int, repeats: int, out: str, device: str) -> None:
    """Measure one contender in this (fresh) process and write a JSON result plus its meta-gradient."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    torch.backends.cudnn.allow_tf32 = False  # float32 convolutions on a GPU too: the gradients are compared
    blob = torch.load(setup, weights_only=True)
    from metalib.tasks import Task
    task = Task(*blob["task"]).to(dev)
    net = _model(blob["state"]).to(dev)
    run = CONTENDERS[name]()

    def step():
        net.zero_grad(set_to_none=True)
        run(net, task, k)
        _sync(dev)

    step()  # warm-up; its gradient is the one compared
    grad = torch.cat([p.grad.flatten() for p in net.parameters()]).cpu()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":  # the allocator's own counter: no per-operator bookkeeping on a fast device
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        step()
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        with MemoryTracker() as mem:
            step()
        peak = mem.peak
    conv = None
    if dev.type == "cpu":  # self time of the convolution operators in one profiled step (the floor below)
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        conv = sum(e.self_cpu_time_total for e in prof.key_averages() if "conv" in e.key.lower()) / 1e6
    total = None
    if name == REFERENCE:  # every row uses the reference's count (the same computation)
        with FlopCounterMode(display=False) as flops:
            step()
        total = flops.get_total_flops()
    torch.save(grad, out + ".grad")
    Path(out).write_text(json.dumps({"seconds": statistics.median(times), "all": times, "peak": peak,
                                     "flops": total, "conv_seconds": conv}))


def exact_grad(setup: str, k: int) -> torch.Tensor:
    """The meta-gradient in float64 (CPU, per-task loop): what every float32 contender approximates."""
    from metalib.maml_train import MAMLLearner
    from metalib.tasks import Task

    blob = torch.load(setup, weights_only=True)
    xs, ys, xq, yq = blob["task"]
    net = _model(blob["state"]).double()
    MAMLLearner(net, "maml", ALPHA, k, strategy="loop", chunk=1).meta_backward(Task(xs.double(), ys, xq.double(), yq))
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of an n x n matmul on ``device`` (the roofline the meta-step is compared with)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def product():
        a @ b
        _sync(device)
    product()  # warm-up
    return 2 * n ** 3 / measure(product, repeats=repeats).seconds / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the whole list of contenders this many times, interleaved, and take medians "
                         "(a noisy machine drifts during a run)")
    ap.add_argument("--contenders", nargs="+", default=None, help=f"subset of {list(CONTENDERS)}")
    ap.add_argument("--l2l-python", default=str(ROOT / ".venv-l2l/bin/python"),
                    help="python of an environment with learn2learn installed")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: metalib.get_device())")
    ap.add_argument("--l2l-path", default=None, help="folder put first on learn2learn's PYTHONPATH (its source)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--check-l2l", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check_l2l:
        import_l2l_maml()
        return 0
    if args.worker:
        worker(args.worker, args.setup, args.ks[0], args.repeats, args.result, args.device or "cpu")
        return 0

    import metalib
    from _report import cpu_name, emit

    device = metalib.get_device(args.device)
    l2l_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (args.l2l_path, str(ROOT)) if p)}

    torch.manual_seed(0)
    data = metalib.load_omniglot()
    split = metalib.omniglot_split(data, "vinyals", "train")
    task = metalib.EpisodeSampler(split, 5, 1, 15, seed=0).sample(args.tasks)
    tmp = Path(tempfile.mkdtemp(prefix="maml_speed_"))
    setup = str(tmp / "setup.pt")
    torch.save({"state": Conv4(hidden=64, n_classes=5, running_stats=False).state_dict(), "task": list(task)}, setup)
    l2l_ok = Path(args.l2l_python).exists() and subprocess.run(
        [args.l2l_python, __file__, "--check-l2l"], capture_output=True, env=l2l_env).returncode == 0
    names = args.contenders or [n for n in CONTENDERS if n != "learn2learn MAML" or l2l_ok]
    gpu = device.type == "cuda"
    peak = matmul_peak(device, n=8192 if gpu else 2048)
    where = (f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), float32, TF32 off" if gpu
             else "CPU, float32")
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
             f"threads), {where}; {datetime.date.today()}; load average at start {os.getloadavg()[0]:.2f}; "
             f"{args.rounds} round(s) of {args.repeats} timed steps per contender; "
             f"matmul peak {peak:.0f} GFLOP/s ({8192 if gpu else 2048}², float32). learn2learn: "
             f"{'installed (' + args.l2l_python + ')' if l2l_ok else 'not installed: its algorithm is reproduced plainly'}.",
             "", f"Conv-4 (64), 5-way 1-shot, 15 queries/class, {args.tasks} tasks, second order, α = {ALPHA}:", "",
             "| k | contender | s / meta-step | × learn2learn | peak MiB | GFLOP / step | GFLOP/s | % of matmul peak "
             "| rel. error vs reference | rel. error vs float64 | s in convolutions | × learn2learn if only convolutions "
             "cost |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in args.ks:
        results: dict[str, dict] = {}
        for rnd in range(args.rounds):  # every round runs each contender once more, in a fresh process
            for name in names:
                res = str(tmp / f"{abs(hash(name))}_{k}_{rnd}.json")
                py = args.l2l_python if name == "learn2learn MAML" else sys.executable
                env = l2l_env if name == "learn2learn MAML" else {**os.environ, "PYTHONPATH": str(ROOT)}
                cmd = [py, __file__, "--worker", name, "--setup", setup, "--ks", str(k), "--repeats",
                       str(args.repeats), "--result", res, "--device", str(device)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode:
                    print(f"{name} (k={k}) failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(Path(res).read_text())
                prev = results.setdefault(name, {**r, "grad": torch.load(res + ".grad"), "rounds": [], "convs": []})
                prev["rounds"].append(r["seconds"])
                prev["convs"].append(r.get("conv_seconds"))
                prev["peak"] = max(prev["peak"], r["peak"])
                print(f"k={k} round {rnd + 1} {name}: {r['seconds']:.2f} s", flush=True)
        for r in results.values():  # the median over rounds (each a median over repeats)
            r["seconds"] = statistics.median(r["rounds"])
            convs = [c for c in r["convs"] if c is not None]
            r["conv_seconds"] = statistics.median(convs) if convs else None
        ref = results.get(REFERENCE, {}).get("grad")
        exact = exact_grad(setup, k)
        model_flops = results.get(REFERENCE, {}).get("flops")
        base = results.get("learn2learn MAML") or results.get("clone-and-adapt (learn2learn's algorithm, plain)")
        for name, r in results.items():
            err = float((r["grad"] - ref).norm() / ref.norm()) if ref is not None else float("nan")
            err64 = float((r["grad"].double() - exact).norm() / exact.norm())
            gf = (model_flops or float("nan")) / 1e9  # the reference's FLOPs (the counter ignores conv groups)
            ratio = f"{base['seconds'] / r['seconds']:.2f}" if base else "–"
            conv = r.get("conv_seconds")
            floor = (f"{conv:.3f} | {base['seconds'] / conv:.2f}" if conv and base else
                     f"{conv:.3f} | –" if conv else "– | –")
            spread = f" ({min(r['rounds']):.2f}–{max(r['rounds']):.2f})" if len(r["rounds"]) > 1 else ""
            lines.append(f"| {k} | {name} | {r['seconds']:.3f}{spread} | {ratio} | "
                         f"{r['peak'] / 2**20:.0f} | {gf:.1f} | {gf / r['seconds']:.1f} | "
                         f"{100 * gf / r['seconds'] / peak:.1f}% | {err:.1e} | {err64:.1e} | {floor} |")
    lines += ["", "× learn2learn: how many times faster than learn2learn (or its plain reproduction) in this run. "
              "GFLOP / step: the reference's count (torch.utils.flop_counter), used for every row since it is the "
              "same computation (the counter overcounts grouped convolutions). rel. error vs float64: against the "
              "same meta-gradient computed in float64 (per-task loop), i.e. each contender's own rounding error. Peak MiB: tensors alive at once "
              "during a meta-step (CPU: metalib.profiling.MemoryTracker; GPU: torch.cuda.max_memory_allocated "
              "above what was allocated before the step). s in convolutions (CPU only): self time of the "
              "convolution operators (forward, backward, double backward) in one step under torch.profiler; "
              "× learn2learn if only convolutions cost: learn2learn's seconds over that, the speed-up this "
              "contender would reach if every other operator took no time. "
              "Command: python benchmarks/maml_speed.py " + " ".join(sys.argv[1:])]
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
