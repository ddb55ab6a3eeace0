"""Episodes per second: metalib's on-device `EpisodeSampler` vs a per-image PIL-decoding sampler.

What it measures: meta-batches of B=32 Omniglot tasks (vinyals "test" classes, x4 rotations,
1692 classes) for 5-way 1-shot and 20-way 5-shot, 15 queries per class, from
  * metalib: `EpisodeSampler.sample(32)` indexing the decoded uint8 tensor (CPU, and CUDA if
    available; CUDA timings synchronise before reading the clock);
  * the peer, written here in the style of torchmeta/learn2learn: one task per `__getitem__`,
    Python `random` picks N classes and K+Q files per class, every image is
    `PIL.Image.open(path).convert("L").resize((28, 28), LANCZOS)`, inverted, made a float tensor
    via numpy and rotated with PIL `transpose` (what torchmeta's `Rotation` does for multiples of
    90 degrees on square images); B tasks are collated with `torch.stack`. Timed in the main
    process (like a DataLoader with num_workers=0) and with `DataLoader(num_workers=2)`.
The PNGs are extracted once from the two zips into a temporary folder (setup, not timed). Each
measurement warms up, then repeats until it has run a few seconds (and at least a few batches).
It also checks that both samplers give identical shapes, pixels in [0, 1] with ink = 1, and that
the peer decodes a few (rotated) images exactly as metalib's cache holds them.

Run (from the repository root):
    METALIB_DATA=../shared/data python benchmarks/sampler_speed.py   # or: make bench
    ... --quick              # smoke run: tiny repetitions
    ... --out results.md     # also write the table as markdown
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import metalib
from metalib import EpisodeSampler, Task
from metalib.data.omniglot import ZIP_NAMES, find_zip
from metalib.data.splits import omniglot_split, split_characters

B, QUERIES = 32, 15
SETTINGS = ((5, 1), (20, 5))  # (N, K)
ROTATE = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def peer_classes(data, root: Path) -> list[tuple[list[str], int]]:
    """The vinyals test classes as (20 PNG paths, rotation k), in metalib's class order."""
    folders = []
    for i in split_characters(data, "vinyals", "test").tolist():
        alphabet = data.alphabet_names[int(data.alphabet[i])]  # "images_<set>/<Alphabet>"
        folder = root / alphabet / data.char_names[i].split("/")[1]  # .../characterNN
        folders.append(sorted(str(p) for p in folder.glob("*.png")))
    assert all(len(f) == 20 for f in folders), "extracted folders do not hold 20 drawings each"
    return [(files, k) for k in range(4) for files in folders]


def load_image(path: str, k: int) -> torch.Tensor:
    """One drawing as a (1, 28, 28) float tensor in [0, 1], ink = 1, rotated k*90 degrees."""
    with Image.open(path) as im:
        img = im.convert("L").resize((28, 28), Image.LANCZOS)
    if k:
        img = img.transpose(ROTATE[k])
    return torch.from_numpy((255 - np.asarray(img, dtype=np.float32)) / 255).unsqueeze(0)


class PeerTasks(Dataset):
    """torchmeta/learn2learn-style task dataset: item i is one N-way K-shot task, decoded per image."""

    def __init__(self, classes, n_way: int, k_shot: int, n_query: int, seed: int = 0):
        self.classes, self.n, self.k, self.q, self.seed = classes, n_way, k_shot, n_query, seed

    def __len__(self) -> int:
        return 10 ** 9

    def __getitem__(self, index: int) -> Task:
        rng = random.Random(self.seed * 1_000_003 + index)
        rows = []
        for c in rng.sample(range(len(self.classes)), self.n):
            files, k = self.classes[c]
            rows.append(torch.stack([load_image(p, k) for p in rng.sample(files, self.k + self.q)]))
        x = torch.stack(rows)  # (N, K+Q, 1, 28, 28)
        y = torch.arange(self.n)
        return Task(x[:, :self.k].reshape(-1, 1, 28, 28), y.repeat_interleave(self.k),
                    x[:, self.k:].reshape(-1, 1, 28, 28), y.repeat_interleave(self.q))


def collate(tasks: list[Task]) -> Task:
    return Task(*(torch.stack(t) for t in zip(*tasks)))


def rate(step, min_time: float, min_reps: int, warmup: int = 1, sync=lambda: None) -> float:
    """Episodes/s of ``step()`` (one meta-batch of B tasks) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_time:
        step()
        reps += 1
    sync()
    return B * reps / (time.perf_counter() - start)


def check(ours: Task, theirs: Task) -> None:
    for name, a, b in zip(Task._fields, ours, theirs):
        assert a.shape == b.shape, f"{name}: metalib {tuple(a.shape)} vs peer {tuple(b.shape)}"
    for who, task in (("metalib", ours), ("peer", theirs)):
        for x in (task.x_support, task.x_query):
            lo, hi, mean = x.min().item(), x.max().item(), x.float().mean().item()
            assert 0 <= lo and hi == 1 and mean < 0.5, f"{who}: range [{lo}, {hi}], mean {mean} (ink must be 1)"


def cpu_seconds() -> tuple[float, float, float]:
    """(wall clock, CPU seconds busy on the whole machine, CPU seconds of this process and its reaped children)."""
    ticks = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    t = os.times()
    return (time.perf_counter(), (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"),
            t.user + t.system + t.children_user + t.children_system)


def machine(devices: list[str]) -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    gpu = f" ({torch.cuda.get_device_name()})" if "cuda" in devices else ""
    return (f"Machine: {model}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"torch threads {torch.get_num_threads()}, devices: {', '.join(devices)}{gpu}, "
            f"load avg at start {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: shrink repetitions")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the peer variant (0: skip)")
    args = ap.parse_args()
    ours_time, ours_reps, peer_time, peer_reps = (0.2, 3, 0.0, 1) if args.quick else (3.0, 20, 3.0, 4)

    data = metalib.load_omniglot(download=False, progress=False)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    splits = {d: omniglot_split(data, "vinyals", "test", device=d) for d in devices}
    header, start = machine(devices), cpu_seconds()
    print(header, flush=True)

    with tempfile.TemporaryDirectory(prefix="omniglot_png_") as tmp:
        t0 = time.perf_counter()
        for name in ZIP_NAMES:
            with zipfile.ZipFile(find_zip(name)) as zf:
                zf.extractall(tmp)
        classes = peer_classes(data, Path(tmp))
        print(f"setup: extracted PNGs to {tmp} in {time.perf_counter() - t0:.1f} s "
              f"({len(classes)} classes)", flush=True)
        cpu = splits["cpu"]
        for c in (0, 1, len(classes) // 4 + 2, len(classes) // 2 + 3, 3 * len(classes) // 4 + 4):
            diff = (load_image(classes[c][0][7], classes[c][1]) - cpu.images[c, 7].float() / 255).abs().max()
            assert diff < 1e-6, f"peer image of class {cpu.class_names[c]} differs from metalib's by {diff}"

        rows = []
        for n, k in SETTINGS:
            setting = f"{n}-way {k}-shot {QUERIES}q, B={B}"
            peer = PeerTasks(classes, n, k, QUERIES)
            counter = iter(range(10 ** 9))
            peer_step = lambda: collate([peer[next(counter)] for _ in range(B)])  # noqa: E731
            samplers = {d: EpisodeSampler(s, n, k, QUERIES, seed=0) for d, s in splits.items()}
            check(samplers["cpu"].sample(B), peer_step())
            ours = {}
            for d, sampler in samplers.items():
                sync = torch.cuda.synchronize if d == "cuda" else (lambda: None)
                ours[d] = rate(lambda: sampler.sample(B), ours_time, ours_reps, warmup=3, sync=sync)
                print(f"  {setting}: metalib {d}: {ours[d]:,.0f} eps/s", flush=True)
            peers = {"PIL nw=0": rate(peer_step, peer_time, peer_reps)}
            print(f"  {setting}: PIL peer nw=0: {peers['PIL nw=0']:,.1f} eps/s", flush=True)
            if args.workers:
                loader = DataLoader(peer, batch_size=B, num_workers=args.workers, collate_fn=collate,
                                    persistent_workers=True, prefetch_factor=2)
                it = iter(loader)
                label = f"PIL DataLoader nw={args.workers}"
                peers[label] = rate(lambda: next(it), peer_time, peer_reps, warmup=args.workers)
                print(f"  {setting}: {label}: {peers[label]:,.1f} eps/s", flush=True)
                del it, loader
            for d, ours_rate in ours.items():
                for label, peer_rate in peers.items():
                    rows.append(f"| {setting}: metalib {d} vs {label} | {ours_rate:,.0f} | "
                                f"{peer_rate:,.1f} | {ours_rate / peer_rate:,.0f}x |")

    (w0, busy0, own0), (w1, busy1, own1) = start, cpu_seconds()
    header += (f"; other processes used {max(0.0, (busy1 - busy0) - (own1 - own0)) / (w1 - w0):.2f} "
               f"of {os.cpu_count()} cores on average during the run")
    table = "\n".join([header + ("  (--quick)" if args.quick else ""), "",
                       "| setting | metalib eps/s | PIL peer eps/s | ratio |",
                       "|---|---:|---:|---:|", *rows])
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
