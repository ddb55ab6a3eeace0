"""Tests of metalib.data: the Omniglot loader and cache, the class splits, and sinusoid tasks.

Tests that need the real data call ``metalib.load_omniglot()`` with no root: the session's
conftest points METALIB_DATA at the shared data folder and METALIB_CACHE at the repo's .cache.
Tests that write caches or fake zips use ``tmp_path`` and monkeypatch METALIB_CACHE.
"""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import metalib
from metalib import OmniglotError
from metalib.data import omniglot as og
from metalib.data.splits import split_characters

DOWNLOAD_HINT = "python -m metalib download omniglot"


@pytest.fixture(scope="module")
def omniglot():
    return metalib.load_omniglot(download=False, progress=False)


@pytest.fixture(scope="module")
def real_zips():
    paths = {name: og.find_zip(name) for name in og.ZIP_NAMES}
    missing = [n for n, p in paths.items() if p is None]
    assert not missing, f"real Omniglot zips {missing} not found under METALIB_DATA={og.data_root()}"
    return paths


def _fake_zip(path: Path, name: str, n_chars: int, drawings: int = 20, short_char: int | None = None) -> Path:
    """A zip with the official layout (images_<set>/<Alphabet>/characterNN/NNNN_DD.png), empty PNGs."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for c in range(n_chars):
            alphabet = f"Alphabet_{c // 40:02d}"
            n = drawings - 1 if c == short_char else drawings
            for d in range(1, n + 1):
                zf.writestr(f"{name}/{alphabet}/character{c % 40 + 1:02d}/{c + 1:04d}_{d:02d}.png", b"")
    return path


# ----------------------------------------------------------------------------- Omniglot content

def test_omniglot_counts(omniglot):
    assert omniglot.n_chars == 1623
    assert omniglot.images.shape == (1623, 20, 28, 28)
    assert omniglot.images.dtype == torch.uint8
    assert int(omniglot.background.sum()) == 964
    assert omniglot.background.dtype == torch.bool
    assert len(omniglot.alphabet_names) == 50
    assert len(set(omniglot.alphabet_names)) == 50
    assert sum(n.startswith("images_background/") for n in omniglot.alphabet_names) == 30
    assert sum(n.startswith("images_evaluation/") for n in omniglot.alphabet_names) == 20
    assert len(omniglot.char_names) == 1623 and len(set(omniglot.char_names)) == 1623
    assert omniglot.alphabet.shape == (1623,)
    assert sorted(torch.unique(omniglot.alphabet).tolist()) == list(range(50))
    # background characters come first, as the cache is ordered by set
    assert omniglot.background[:964].all() and not omniglot.background[964:].any()
    # file ids NNNN are exactly 1..1623
    assert sorted(omniglot.file_id.tolist()) == list(range(1, 1624))
    # drawers 01..20 in order for every character
    assert omniglot.drawer.shape == (1623, 20)
    assert torch.equal(omniglot.drawer, torch.arange(1, 21).expand(1623, 20))


def test_omniglot_alphabet_index_matches_names(omniglot):
    for i in (0, 500, 963, 964, 1622):
        alpha = omniglot.alphabet_names[int(omniglot.alphabet[i])]
        set_name = "images_background" if omniglot.background[i] else "images_evaluation"
        assert alpha == f"{set_name}/{omniglot.char_names[i].split('/')[0]}"


def test_omniglot_ink_is_255(omniglot):
    img = omniglot.images
    mean = img.float().mean().item()
    # strokes are thin: most of each image is background (0), ink is bright
    assert 5 < mean < 60, mean
    assert int(img.max()) == 255
    # the border is background: ink = 255 means the corners are (almost) zero
    corners = img[..., 0, 0].float().mean().item()
    assert corners < 5, corners
    # every drawing has some ink
    assert (img.flatten(2).amax(-1) > 100).all()


# ----------------------------------------------------------------------------- cache

def _assert_same_data(a, b):
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, torch.Tensor):
            assert va.dtype == vb.dtype and torch.equal(va, vb), f.name
        else:
            assert va == vb, f.name


def test_cache_rebuild_and_reload_identical(omniglot, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("METALIB_CACHE", str(cache_dir))
    built = metalib.load_omniglot(download=False, progress=False)  # decodes the zips
    files = sorted(p.name for p in cache_dir.iterdir())
    assert files == [og.cache_path().name], files  # one cache file, no temp files left over
    reloaded = metalib.load_omniglot(download=False, progress=False)  # from the cache
    _assert_same_data(built, reloaded)
    _assert_same_data(built, omniglot)


def test_cache_is_used_before_zips(omniglot, tmp_path, monkeypatch):
    """A valid cache is loaded without needing the zips at all."""
    session_cache = og.cache_path()
    assert session_cache.is_file()
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    shutil.copy(session_cache, cache_dir / session_cache.name)
    monkeypatch.setenv("METALIB_CACHE", str(cache_dir))
    empty = tmp_path / "empty"
    empty.mkdir()
    data = metalib.load_omniglot(root=empty, download=False, progress=False)
    _assert_same_data(data, omniglot)


def test_stale_cache_version_is_not_used(tmp_path, monkeypatch):
    """A cache written by another CACHE_VERSION is ignored (here: the zips are then required)."""
    monkeypatch.setenv("METALIB_CACHE", str(tmp_path / "cache"))
    og.atomic_save({"version": og.CACHE_VERSION - 1}, og.cache_path())
    with pytest.raises(OmniglotError, match="not found"):
        metalib.load_omniglot(root=tmp_path / "empty", download=False, progress=False)


def test_failed_cache_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "omniglot28_v1.pt"
    (target / "occupied").mkdir(parents=True)  # a non-empty folder where the file should go
    with pytest.raises(OSError):
        og.atomic_save({"version": og.CACHE_VERSION}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["omniglot28_v1.pt"]


def test_cache_path_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("METALIB_CACHE", str(tmp_path / "c"))
    assert og.cache_path() == tmp_path / "c" / f"omniglot28_v{og.CACHE_VERSION}.pt"
    assert og.cache_path(tmp_path / "elsewhere").parent == tmp_path / "c"


# ----------------------------------------------------------------------------- missing / corrupt data

def test_missing_zips_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("METALIB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(OmniglotError) as info:
        metalib.load_omniglot(root=root, download=False, progress=False)
    msg = str(info.value)
    assert DOWNLOAD_HINT in msg
    assert "images_background" in msg and "images_evaluation" in msg
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_verify_zip_wrong_character_count(tmp_path):
    path = _fake_zip(tmp_path / "images_evaluation.zip", "images_evaluation", n_chars=3)
    with pytest.raises(OmniglotError) as info:
        og.verify_zip(path, "images_evaluation")
    msg = str(info.value)
    assert "has 3 characters (expected 659)" in msg
    assert DOWNLOAD_HINT in msg


def test_verify_zip_character_missing_a_drawing(tmp_path):
    path = _fake_zip(tmp_path / "images_evaluation.zip", "images_evaluation", n_chars=659, short_char=7)
    with pytest.raises(OmniglotError, match=r"1 characters without 20 drawings"):
        og.verify_zip(path, "images_evaluation")


def test_verify_zip_wrong_set_name(tmp_path):
    """Entries of the other set do not count: a renamed background zip is not an evaluation zip."""
    path = _fake_zip(tmp_path / "images_evaluation.zip", "images_background", n_chars=659)
    with pytest.raises(OmniglotError, match=r"has 0 characters"):
        og.verify_zip(path, "images_evaluation")


def test_verify_zip_content_check_passes_with_warning(tmp_path):
    """Unknown checksum but the full layout: accepted with a warning, returns the file's sha256."""
    import hashlib
    path = _fake_zip(tmp_path / "images_evaluation.zip", "images_evaluation", n_chars=659)
    with pytest.warns(UserWarning, match="unknown checksum"):
        sha = og.verify_zip(path, "images_evaluation")
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_zip_not_a_zip(tmp_path):
    path = tmp_path / "images_background.zip"
    path.write_bytes(b"this is not a zip file" * 100)
    with pytest.raises(OmniglotError, match="not a readable zip"):
        og.verify_zip(path, "images_background")


def test_truncated_zip_raises_and_writes_no_cache(real_zips, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("METALIB_CACHE", str(cache_dir))
    root = tmp_path / "data"
    root.mkdir()
    (root / "images_background.zip").symlink_to(real_zips["images_background"])
    with open(real_zips["images_evaluation"], "rb") as src:
        (root / "images_evaluation.zip").write_bytes(src.read(1 << 20))
    with pytest.raises(OmniglotError) as info:
        metalib.load_omniglot(root=root, download=False, progress=False)
    msg = str(info.value)
    assert "images_evaluation.zip" in msg
    assert DOWNLOAD_HINT in msg
    leftovers = list(cache_dir.glob("*.pt")) + list(cache_dir.glob("*.tmp")) if cache_dir.exists() else []
    assert leftovers == []
    assert not og.cache_path().exists()


def _source_sha256(real_zips) -> dict[str, str]:
    source = real_zips["images_background"].parent / "SOURCE.txt"
    found = dict((name, sha) for sha, name in re.findall(r"\b([0-9a-f]{64})\s+(images_\w+)\.zip", source.read_text()))
    assert set(found) == set(og.ZIP_NAMES), found
    return found


def test_verify_zip_real_checksums(real_zips):
    expected = _source_sha256(real_zips)
    for name, path in real_zips.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a known checksum must not fall back to the warning path
            assert og.verify_zip(path, name) == expected[name]


def test_verify_zip_swapped_names_rejected(real_zips):
    """The background zip is not accepted as the evaluation zip (checksums are per name)."""
    with pytest.raises(OmniglotError):
        og.verify_zip(real_zips["images_background"], "images_evaluation")


def test_find_zip_looks_in_root_and_omniglot_subfolder(tmp_path):
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "images_background.zip").write_bytes(b"x")
    (tmp_path / "images_evaluation.zip").write_bytes(b"x")
    assert og.find_zip("images_background", tmp_path) == tmp_path / "omniglot" / "images_background.zip"
    assert og.find_zip("images_evaluation", tmp_path) == tmp_path / "images_evaluation.zip"
    assert og.find_zip("images_background", tmp_path / "nothing") is None


# ----------------------------------------------------------------------------- splits

@pytest.mark.parametrize("part,size", [("train", 1028), ("val", 172), ("trainval", 1200), ("test", 423)])
def test_vinyals_sizes(omniglot, part, size):
    chars = split_characters(omniglot, "vinyals", part)
    assert len(chars) == size
    plain = metalib.omniglot_split(omniglot, "vinyals", part, rotations=False)
    assert plain.n_classes == size
    assert plain.images.shape == (size, 20, 28, 28)
    assert plain.name == f"vinyals/{part}"


def test_vinyals_parts_partition(omniglot):
    parts = {p: set(split_characters(omniglot, "vinyals", p).tolist()) for p in ("train", "val", "trainval", "test")}
    assert not parts["train"] & parts["val"]
    assert not parts["trainval"] & parts["test"]
    assert parts["train"] | parts["val"] == parts["trainval"]
    assert parts["trainval"] | parts["test"] == set(range(1623))


def test_vinyals_is_the_published_split(omniglot):
    """The published lists: class counts, all four rotations per character, and their alphabets."""
    from metalib.data.splits import vinyals_classes
    counts = {p: len(vinyals_classes(p)) for p in ("train", "val", "test", "trainval")}
    assert counts == {"train": 4112, "val": 688, "test": 1692, "trainval": 4800}
    assert sorted(vinyals_classes("train") + vinyals_classes("val")) == sorted(vinyals_classes("trainval"))
    for part in ("train", "val", "test"):
        split = metalib.omniglot_split(omniglot, "vinyals", part)
        assert split.n_classes == counts[part]
        listed = {c.replace("/rot000", "").replace("/rot090", "/rot90") for c in vinyals_classes(part)}
        assert set(split.class_names) == listed, part  # the same classes, rotations included
    alphabets = {p: {omniglot.char_names[i].split("/")[0] for i in split_characters(omniglot, "vinyals", p).tolist()}
                 for p in ("train", "val", "test")}
    assert (len(alphabets["train"]), len(alphabets["val"]), len(alphabets["test"])) == (33, 5, 13)
    assert alphabets["train"] & alphabets["test"] == {"Gurmukhi"}  # nearly alphabet-disjoint
    assert not alphabets["val"] & alphabets["test"]
    # the published test characters, spot-checked against the list file's first and last lines
    test_names = {omniglot.char_names[i] for i in split_characters(omniglot, "vinyals", "test").tolist()}
    assert "Gurmukhi/character42" in test_names and vinyals_classes("test")[-1].rsplit("/", 1)[0] in test_names


def test_vinyals_lists_shipped_equal_the_shared_copy_and_are_verified(tmp_path, monkeypatch):
    from metalib.data import splits
    shared = og.data_root() / "omniglot" / "splits" / "vinyals"
    if not shared.is_dir():
        pytest.skip(f"no shared copy of the Vinyals lists under {shared}")
    for part in ("train", "val", "test", "trainval"):
        assert (splits._PACKAGED / f"{part}.txt").read_bytes() == (shared / f"{part}.txt").read_bytes(), part
    # a tampered list under METALIB_DATA is refused with a message that says what to do
    bad = tmp_path / "omniglot" / "splits" / "vinyals"
    bad.mkdir(parents=True)
    (bad / "test.txt").write_text("Gurmukhi/character42/rot000\n")
    monkeypatch.setenv("METALIB_DATA", str(tmp_path))
    splits.vinyals_classes.cache_clear()
    try:
        with pytest.raises(OmniglotError, match="does not match the published Vinyals list"):
            splits.vinyals_classes("test")
        assert len(splits.vinyals_classes("val")) == 688  # no copy there: the packaged one
    finally:
        splits.vinyals_classes.cache_clear()


def test_vinyals_missing_character_is_a_clear_error(omniglot):
    from metalib.data.splits import split_characters as sc
    names = list(omniglot.char_names)
    names[names.index("Gurmukhi/character42")] = "Gurmukhi/character99"
    broken = dataclasses.replace(omniglot, char_names=tuple(names))
    with pytest.raises(OmniglotError, match="not in the Omniglot images.*Gurmukhi/character42"):
        sc(broken, "vinyals", "test")


def test_vinyals_rotations(omniglot):
    split = metalib.omniglot_split(omniglot, "vinyals", "test")
    C = 423
    assert split.n_classes == 4 * C
    assert split.images.shape == (4 * C, 20, 28, 28)
    assert split.images.dtype == torch.uint8
    assert len(split.class_names) == 4 * C
    base = split.images[:C]
    assert torch.equal(base, omniglot.images[split.char_index[:C]])
    for k in (1, 2, 3):
        rotated = split.images[k * C:(k + 1) * C]
        assert torch.equal(rotated, torch.rot90(base, k, dims=(2, 3))), k
        assert torch.equal(split.char_index[k * C:(k + 1) * C], split.char_index[:C])
        for i in (0, 17, C - 1):
            assert split.class_names[k * C + i] == f"{split.class_names[i]}/rot{90 * k}"
    assert split.class_names[5] == omniglot.char_names[int(split.char_index[5])]
    assert not any(n.endswith(("/rot90", "/rot180", "/rot270")) for n in split.class_names[:C])
    # rotation is not the identity on real characters
    assert not torch.equal(split.images[C], split.images[0])


def test_lake_parts(omniglot):
    parts = {p: split_characters(omniglot, "lake", p) for p in ("train", "val", "trainval", "test")}
    sets = {p: set(v.tolist()) for p, v in parts.items()}
    assert not sets["train"] & sets["val"]
    assert not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert sets["train"] | sets["val"] | sets["test"] == set(range(1623))
    assert sets["train"] | sets["val"] == sets["trainval"]
    assert len(sets["trainval"]) == 964 and len(sets["test"]) == 659
    alphabets = {p: set(omniglot.alphabet[v].tolist()) for p, v in parts.items()}
    assert len(alphabets["train"]) == 25 and len(alphabets["val"]) == 5
    assert len(alphabets["trainval"]) == 30 and len(alphabets["test"]) == 20
    # no alphabet is shared between meta-train(+val) and meta-test, nor between train and val
    assert not alphabets["trainval"] & alphabets["test"]
    assert not alphabets["train"] & alphabets["val"]
    assert omniglot.background[parts["trainval"]].all()
    assert not omniglot.background[parts["test"]].any()


def test_lake_no_rotations_by_default(omniglot):
    split = metalib.omniglot_split(omniglot, "lake", "val")
    assert split.n_classes == len(split_characters(omniglot, "lake", "val"))
    assert torch.equal(split.images, omniglot.images[split.char_index])
    rotated = metalib.omniglot_split(omniglot, "lake", "val", rotations=True)
    assert rotated.n_classes == 4 * split.n_classes


@pytest.mark.parametrize("split", ["vinyals", "lake", "random"])
def test_split_determinism(omniglot, split):
    for part in ("train", "val", "test"):
        a = split_characters(omniglot, split, part)
        b = split_characters(omniglot, split, part)
        assert torch.equal(a, b)
        assert torch.equal(a, torch.sort(a).values)  # sorted indices
    s1 = metalib.omniglot_split(omniglot, split, "val")
    s2 = metalib.omniglot_split(omniglot, split, "val")
    assert torch.equal(s1.images, s2.images) and s1.class_names == s2.class_names


def test_random_split_is_the_documented_permutation(omniglot):
    """The old stand-in split ("random"), kept for the two GPU checkpoints trained with it."""
    import numpy as np
    perm = np.random.RandomState(0).permutation(1623)
    assert split_characters(omniglot, "random", "test").tolist() == sorted(perm[1200:].tolist())
    assert split_characters(omniglot, "random", "train").tolist() == sorted(perm[:1028].tolist())
    assert metalib.omniglot_split(omniglot, "random", "test").n_classes == 4 * 423  # rotations by default
    # it is not the published split
    assert split_characters(omniglot, "random", "test").tolist() != split_characters(omniglot, "vinyals", "test").tolist()


@pytest.mark.parametrize("split,part", [("omniglot", "train"), ("vinyals", "training"), ("lake", "")])
def test_unknown_split_or_part(omniglot, split, part):
    with pytest.raises(ValueError, match="unknown"):
        metalib.omniglot_split(omniglot, split, part)


# ----------------------------------------------------------------------------- sinusoid

def test_sinusoid_shapes_ranges_and_function():
    fam = metalib.SinusoidTasks()
    task, amp, phase = fam.sample_with_params(256, 5, 7, generator=metalib.make_generator(0))
    assert task.x_support.shape == (256, 5, 1) and task.y_support.shape == (256, 5, 1)
    assert task.x_query.shape == (256, 7, 1) and task.y_query.shape == (256, 7, 1)
    assert amp.shape == (256,) and phase.shape == (256,)
    assert all(t.dtype == torch.float32 for t in task)
    assert amp.min() >= 0.1 and amp.max() <= 5.0
    assert phase.min() >= 0.0 and phase.max() <= math.pi
    x = torch.cat([task.x_support, task.x_query], 1)
    y = torch.cat([task.y_support, task.y_query], 1)
    assert x.min() >= -5.0 and x.max() <= 5.0
    # the ranges are actually used (not a degenerate sampler)
    assert amp.max() - amp.min() > 3 and phase.max() - phase.min() > 2 and x.max() - x.min() > 8
    for b in (0, 1, 100, 255):
        for m in range(12):
            xv = float(x[b, m, 0])
            expected = float(amp[b]) * math.sin(xv - float(phase[b]))
            assert abs(float(y[b, m, 0]) - expected) < 1e-5


def test_sinusoid_same_seed_same_tasks():
    fam = metalib.SinusoidTasks()
    a = fam.sample(8, 10, 10, generator=metalib.make_generator(3))
    b = fam.sample(8, 10, 10, generator=metalib.make_generator(3))
    c = fam.sample(8, 10, 10, generator=metalib.make_generator(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.x_support, c.x_support)


def test_sinusoid_custom_ranges_and_bad_sizes():
    fam = metalib.SinusoidTasks(amplitude=(1.0, 1.0), phase=(0.0, 0.0), x_range=(0.0, 1.0))
    task = fam.sample(4, 3, 3, generator=metalib.make_generator(0))
    assert torch.allclose(task.y_support, torch.sin(task.x_support))
    with pytest.raises(ValueError):
        fam.sample(0, 3, 3, generator=metalib.make_generator(0))
    with pytest.raises(ValueError):
        fam.sample(2, 0, 3, generator=metalib.make_generator(0))


def test_unreadable_cache_is_rebuilt(tmp_path, monkeypatch):
    """A truncated cache file (e.g. a killed process on an old version) is rebuilt, not fatal."""
    import warnings

    import metalib
    from metalib.data import omniglot as og

    monkeypatch.setenv("METALIB_CACHE", str(tmp_path))
    cache = og.cache_path()
    cache.write_bytes(b"PK\x03\x04 not really a torch file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = metalib.load_omniglot()
    assert data.images.shape == (1623, 20, 28, 28)
    assert any("unreadable Omniglot cache" in str(w.message) for w in caught)
    assert metalib.load_omniglot().images.shape == (1623, 20, 28, 28)  # the rebuilt cache loads


def test_other_image_size_has_its_own_cache_and_the_same_labels(omniglot, tmp_path, monkeypatch):
    monkeypatch.setenv("METALIB_CACHE", str(tmp_path))
    big = metalib.load_omniglot(download=False, progress=False, size=32)
    assert big.images.shape == (1623, 20, 32, 32) and big.images.dtype == torch.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"omniglot32_v{og.CACHE_VERSION}.pt"]
    for f in ("alphabet", "background", "drawer", "file_id", "char_names", "alphabet_names"):
        a, b = getattr(big, f), getattr(omniglot, f)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f
    # the same drawings: ink fraction per image agrees between the two resolutions
    ink32 = big.images[:50].float().mean((-1, -2)) / 255
    ink28 = omniglot.images[:50].float().mean((-1, -2)) / 255
    assert torch.corrcoef(torch.stack([ink32.flatten(), ink28.flatten()]))[0, 1] > 0.95
    with pytest.raises(ValueError, match="size must be between"):
        metalib.load_omniglot(download=False, size=8)
