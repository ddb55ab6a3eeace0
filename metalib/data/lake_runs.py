"""Lake et al.'s one-shot classification benchmark: the official 20 runs of 20-way 1-shot trials.

Lake, Salakhutdinov & Tenenbaum (2015, *Science*, "Human-level concept learning through probabilistic
program induction") test one-shot learning on a fixed set, ``all_runs.zip`` in the Omniglot repository
(github.com/brendenlake/omniglot, ``python/one-shot-classification/``, MIT licence): 20 runs, each with
20 support images (``runNN/training/classKK.png``, one drawing of each of 20 characters of one alphabet)
and 20 queries (``runNN/test/itemMM.png``, another drawing of each); ``class_labels.txt`` pairs every
query with the support image of its character. A model is trained on the background set only. The runs
use 10 of the 20 evaluation alphabets, two runs each; in every run all supports are by one drawer and
all queries by another (`locate_runs` checks this). Published errors over the 400 trials (%): people
4.5 and Bayesian Program Learning 3.3 (Lake et al. 2015), a ConvNet 13.5 (ibid.), Koch et al.'s (2015)
Siamese network 8.0, and the repository's own reference, the Modified Hausdorff distance, 38.8
(`metalib.hausdorff`). Random 20-way episodes drawn within an alphabet of the evaluation set
(``test_sampler(split="lake", within_alphabet=True)``) are a different, harder test: not comparable.

Images are preprocessed exactly as the training cache (`metalib.data.omniglot.preprocess_png`).
Taught in notebook 04's optional case study (its "Going further" appendix); ``python -m metalib evaluate NAME --split lake-runs``.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import omniglot as og
from ..evaluate import mean_ci95
from ..tasks import Task

__all__ = ["LakeRuns", "RunsScore", "PUBLISHED_ERROR", "RUNS_SHA256", "load_lake_runs", "download_runs",
           "verify_runs", "score_runs", "locate_runs"]

RUNS_NAME = "all_runs"
RUNS_PATH = "one-shot-classification/all_runs.zip"  # under omniglot.URL_PREFIX
RUNS_SHA256 = "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"
N_RUNS, N_WAY = 20, 20
#: published error rates on the 20 runs (%), Lake et al. (2015) unless named
PUBLISHED_ERROR = {"Modified Hausdorff distance": 38.8, "ConvNet": 13.5, "Siamese network (Koch et al. 2015)": 8.0,
                   "people": 4.5, "Bayesian Program Learning": 3.3}
_LINE = re.compile(r"^(run\d\d)/test/item(\d\d)\.png (run\d\d)/training/class(\d\d)\.png$")


@dataclass(frozen=True)
class LakeRuns:
    """The runs, decoded like the training cache.

    Attributes:
        support: uint8 (R, 20, S, S), ink = 255; ``support[r, k]`` is ``training/class{k+1:02d}.png``.
        query: uint8 (R, 20, S, S); ``query[r, m]`` is ``test/item{m+1:02d}.png``.
        answer: int64 (R, 20); ``answer[r, m]`` = k, the support image of query m's character.
        names: the run folders ("run01", ...).
    """
    support: torch.Tensor
    query: torch.Tensor
    answer: torch.Tensor
    names: tuple[str, ...]

    @property
    def n_runs(self) -> int:
        return self.support.shape[0]

    def select(self, runs) -> "LakeRuns":
        """The runs at the given indices (e.g. ``range(2)`` for a quick check)."""
        idx = torch.as_tensor(list(runs), dtype=torch.long)
        return LakeRuns(self.support[idx], self.query[idx], self.answer[idx], tuple(self.names[i] for i in idx))

    def task(self, device=None) -> Task:
        """All runs as one batch of 20-way 1-shot tasks: float images in [0, 1] (R, 20, 1, S, S).

        ``y_support[r] = 0..19`` (support image k is class k), ``y_query = answer``.
        """
        r = self.n_runs
        x = lambda u: (u.to(device).float() / 255).unsqueeze(2)  # noqa: E731
        y_support = torch.arange(N_WAY, device=device).expand(r, N_WAY)
        return Task(x(self.support), y_support, x(self.query), self.answer.to(device))


@dataclass(frozen=True)
class RunsScore:
    """Which trials a classifier got wrong (R, 20), and the error over them."""
    wrong: torch.Tensor

    @property
    def trials(self) -> int:
        return self.wrong.numel()

    @property
    def error(self) -> float:
        """Error rate in %, the mean over all trials (= the mean of the runs' errors: 20 trials each)."""
        return 100 * mean_ci95(self.wrong.double())[0]

    @property
    def ci95(self) -> float:
        """Half-width of the 95% interval (normal approximation over the trials, `metalib.mean_ci95`), in %.

        Trials of one run share an alphabet and two drawers, so this treats them as more independent
        than they are: read it as a lower bound on the uncertainty.
        """
        return 100 * mean_ci95(self.wrong.double())[1]

    def __str__(self) -> str:
        return f"error {self.error:.1f}% (95% CI ±{self.ci95:.1f}) over {self.trials} trials"


def score_runs(predict, runs: LakeRuns, device=None) -> RunsScore:
    """Score ``predict(task)`` (logits (R, 20, 20) or labels (R, 20)) on all runs at once."""
    task = runs.task(device)
    out = predict(task)
    pred = out.argmax(-1) if out.dim() == 3 else out
    if pred.shape != task.y_query.shape:
        raise ValueError(f"predict returned shape {tuple(out.shape)}; expected logits (R, 20, 20) or labels (R, 20)")
    return RunsScore((pred != task.y_query).cpu())


def verify_runs(path: str | Path) -> Path:
    """Check that ``path`` is the official ``all_runs.zip`` (its sha256), else raise `OmniglotError`."""
    path = Path(path)
    got = og._digests(path)[1]
    if got != RUNS_SHA256:
        raise og.OmniglotError(f"{path} has sha256 {got}, not that of Lake et al.'s all_runs.zip ({RUNS_SHA256}). "
                               f"Delete it and run `python -m metalib download omniglot`.")
    return path


def download_runs(root: str | Path | None = None, *, progress: bool = True, download: bool = True) -> Path:
    """The verified ``all_runs.zip``: found like the Omniglot zips (``METALIB_DATA``), else downloaded.

    The download goes to ``<root>/omniglot/all_runs.zip.part`` and is renamed only once its sha256
    matches; otherwise it is deleted and `OmniglotError` raised.
    """
    path = og.find_zip(RUNS_NAME, root)
    if path is None:
        path = og.data_root(root) / "omniglot" / f"{RUNS_NAME}.zip"
        if not download:
            raise og.OmniglotError(f"all_runs.zip not found in {path.parent} or {path.parent.parent}. Run "
                                   f"`python -m metalib download omniglot`, or set METALIB_DATA to a folder holding it.")
        og._download(f"{og.URL_PREFIX}/{RUNS_PATH}", path, progress=progress, sha256=RUNS_SHA256)
    return verify_runs(path)


def _read(path: Path, size: int) -> LakeRuns:
    support = np.empty((N_RUNS, N_WAY, size, size), np.uint8)
    query = np.empty_like(support)
    answer = np.full((N_RUNS, N_WAY), -1, np.int64)
    names = tuple(f"run{r + 1:02d}" for r in range(N_RUNS))
    with zipfile.ZipFile(path) as zf:
        for r, run in enumerate(names):
            for k in range(N_WAY):
                support[r, k] = og.preprocess_png(zf.read(f"{run}/training/class{k + 1:02d}.png"), size)
                query[r, k] = og.preprocess_png(zf.read(f"{run}/test/item{k + 1:02d}.png"), size)
            for line in zf.read(f"{run}/class_labels.txt").decode().split("\n"):
                if not line.strip():
                    continue
                m = _LINE.match(line.strip())
                if m is None or m.group(1) != run or m.group(3) != run:
                    raise og.OmniglotError(f"{path}: unexpected line {line!r} in {run}/class_labels.txt")
                answer[r, int(m.group(2)) - 1] = int(m.group(4)) - 1
    if (answer < 0).any() or any(sorted(a) != list(range(N_WAY)) for a in answer.tolist()):
        raise og.OmniglotError(f"{path}: class_labels.txt does not pair the 20 queries one-to-one with the 20 classes")
    return LakeRuns(torch.from_numpy(support), torch.from_numpy(query), torch.from_numpy(answer), names)


def load_lake_runs(root: str | Path | None = None, *, size: int = og.SIZE, download: bool = True,
                   progress: bool = False) -> LakeRuns:
    """The 20 runs at ``size`` x ``size`` pixels (28: as the models were trained; 105: the original
    binary drawings, unresized, as the Modified Hausdorff reference reads them).

    Raises:
        OmniglotError: the zip is missing (with ``download=False``), fails its checksum, or is malformed.
    """
    return _read(download_runs(root, progress=progress, download=download), int(size))


def locate_runs(runs: LakeRuns, data: og.Omniglot) -> dict:
    """Find every run image in the Omniglot images (both decoded at the same size: exact uint8 match).

    Returns:
        ``{"support_char", "query_char": int64 (R, 20) character indices into ``data``;
        "support_drawer", "query_drawer": int64 (R, 20) drawers (1..20); "alphabet": R alphabet names}``.

    Raises:
        LookupError: an image matches no Omniglot image, or more than one character.
    """
    if data.images.shape[-1] != runs.support.shape[-1]:
        raise ValueError(f"decode both at one size: runs {runs.support.shape[-1]}, data {data.images.shape[-1]}")
    index: dict[bytes, set[tuple[int, int]]] = {}
    flat = data.images.flatten(2).numpy()
    for c in range(flat.shape[0]):
        for d in range(flat.shape[1]):
            index.setdefault(flat[c, d].tobytes(), set()).add((c, int(data.drawer[c, d])))
    out = {}
    for part, images in (("support", runs.support), ("query", runs.query)):
        chars, drawers = np.empty(images.shape[:2], np.int64), np.empty(images.shape[:2], np.int64)
        for (r, k), img in zip(np.ndindex(*images.shape[:2]), images.flatten(2).numpy().reshape(-1, images[0, 0].numel())):
            hits = index.get(img.tobytes(), set())
            if len({c for c, _ in hits}) != 1 or len(hits) != 1:
                raise LookupError(f"{runs.names[r]} {part} image {k + 1}: {len(hits)} matching Omniglot images")
            (chars[r, k], drawers[r, k]), = hits
        out[f"{part}_char"], out[f"{part}_drawer"] = torch.from_numpy(chars), torch.from_numpy(drawers)
    alpha = data.alphabet[out["support_char"]]
    out["alphabet"] = tuple(data.alphabet_names[int(a[0])] if (a == a[0]).all() else "mixed" for a in alpha)
    return out
