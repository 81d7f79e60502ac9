"""Paired deraining data sets, detected from the folder, and the random patch stream.

Layouts (detected from what is in the folder; see :func:`load_paired_set`):

* ``prenet``   -- PReNet / Rain100: ``rain-N.png`` beside ``norain-N.png``, or
  ``rainy/rain-N.png`` with ``norain-N.png`` in the folder;
* ``mprnet``   -- MPRNet / Restormer: ``input/`` and ``target/`` holding equal names;
* ``rain1400`` -- DDN's Rain1400: ``rainy_image/N_k.jpg`` (k = 1..14) for ``ground_truth/N.jpg``;
* ``video``    -- frame folders of video pairs: ``CLIP_Rain/`` beside ``CLIP_GT/`` with equal
  frame names (NTURain).

A folder that is none of these but whose sub-folders are (``Datasets/test/{Rain100L,Test100}``)
is a collection of sets (:func:`find_paired_sets`).

Training samples are random patches (crop + flips) drawn by :class:`PatchSource`; sample
``i`` depends only on ``(seed, i)``, so the stream is identical with or without worker
processes, across ``--resume`` and across DDP world sizes (see :class:`StepBatchSampler`).
Images are decoded once and kept in memory as uint8 (:class:`ImageStore`).
"""
from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import DataError, is_image, read_rgb

log = logging.getLogger(__name__)

LAYOUTS = ("prenet", "mprnet", "rain1400", "video")
LAYOUT_HELP = ("rain-N.png beside norain-N.png (or rainy/rain-N.png), input/ + target/, "
               "rainy_image/N_k.jpg + ground_truth/N.jpg, or CLIP_Rain/ + CLIP_GT/ frame folders")

_PRENET_RAIN = re.compile(r"^rain-(.+)$", re.IGNORECASE)
_PRENET_CLEAN = re.compile(r"^norain-(.+)$", re.IGNORECASE)
_RAIN1400 = re.compile(r"^(.+)_(\d+)$")
_TEST_COMPONENT = re.compile(r"^(test|testing|testset|test[-_]?set|test\d+)$", re.IGNORECASE)
#: Folders that hold only test data although their name does not say so.
KNOWN_TEST_SETS = ("NTURain-synthetic",)


@dataclass(frozen=True)
class Pair:
    """One rainy image and its clean ground truth; ``name`` identifies it inside its set."""

    rainy: Path
    clean: Path
    name: str


@dataclass
class PairedSet:
    root: Path
    layout: str
    pairs: list[Pair] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Display name: the folder name, with its parent when it is a split (``Rain100L/test``)."""
        base = self.root.name
        if base.lower() in {"test", "train", "val", "valid", "validation", "testing", "training"}:
            return f"{self.root.parent.name}/{base}"
        return base

    def __len__(self) -> int:
        return len(self.pairs)


def natural_key(text: str) -> list:
    """Sort key putting ``rain-2`` before ``rain-10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _images(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_file() and is_image(p)), key=lambda p: natural_key(p.name))
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _subdir(folder: Path, name: str) -> Path | None:
    for p in folder.iterdir():
        if p.is_dir() and p.name.lower() == name:
            return p
    return None


def _video_clips(folder: Path) -> list[tuple[str, Path, Path]]:
    dirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    clips = []
    for low, rain_dir in dirs.items():
        if low.endswith("_rain"):
            gt = dirs.get(low[: -len("_rain")] + "_gt")
            clips.append((rain_dir.name[: -len("_rain")], rain_dir, gt))
    return sorted(clips, key=lambda c: natural_key(c[0]))


def detect_layouts(root: Path) -> list[str]:
    """Every layout whose marker is present in ``root`` (normally zero or one)."""
    root = Path(root)
    found = []
    files = _images(root)
    rainy_dir = _subdir(root, "rainy")
    if any(_PRENET_CLEAN.match(p.stem) for p in files) and (
            any(_PRENET_RAIN.match(p.stem) for p in files) or rainy_dir is not None):
        found.append("prenet")
    if _subdir(root, "input") is not None and _subdir(root, "target") is not None:
        found.append("mprnet")
    if _subdir(root, "rainy_image") is not None and _subdir(root, "ground_truth") is not None:
        found.append("rain1400")
    if _video_clips(root):
        found.append("video")
    return found


def _unpaired_error(root: Path, rainy: Sequence[Path], clean: Sequence[Path], hint: str) -> DataError:
    parts = []
    for what, items in (("rainy images without a clean image", rainy), ("clean images without a rainy image", clean)):
        if items:
            shown = ", ".join(str(p.relative_to(root)) for p in items[:3])
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {what} ({shown}{more})")
    return DataError(f"unpaired files in {root}: {'; '.join(parts)}; {hint}")


def _pair_by_key(root: Path, rainy: dict[str, Path], clean: dict[str, Path], hint: str,
                 prefix: str = "") -> list[Pair]:
    lonely_rainy = [rainy[k] for k in sorted(set(rainy) - set(clean), key=natural_key)]
    lonely_clean = [clean[k] for k in sorted(set(clean) - set(rainy), key=natural_key)]
    if lonely_rainy or lonely_clean:
        raise _unpaired_error(root, lonely_rainy, lonely_clean, hint)
    return [Pair(rainy[k], clean[k], prefix + k) for k in sorted(rainy, key=natural_key)]


def _keyed(paths: Sequence[Path], pattern: re.Pattern | None, where: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        m = pattern.match(p.stem) if pattern else None
        key = m.group(1) if m else (p.stem if pattern is None else None)
        if key is None:
            continue
        if key in out:
            raise DataError(f"{where} holds two images for the same pair: {out[key].name} and {p.name}")
        out[key] = p
    return out


def _load_prenet(root: Path) -> list[Pair]:
    files = _images(root)
    clean = _keyed(files, _PRENET_CLEAN, root)
    rainy_dir = _subdir(root, "rainy")
    rainy_files = _images(rainy_dir) if rainy_dir is not None else files
    rainy = _keyed(rainy_files, _PRENET_RAIN, root)
    ignored = [p for p in files if not (_PRENET_CLEAN.match(p.stem) or _PRENET_RAIN.match(p.stem))]
    if ignored:
        log.warning("%s: ignoring %d images that are not rain-N/norain-N (e.g. %s)", root, len(ignored), ignored[0].name)
    where = "rainy/rain-N" if rainy_dir is not None else "rain-N"
    return _pair_by_key(root, rainy, clean, f"expected {where} for every norain-N")


def _load_mprnet(root: Path) -> list[Pair]:
    inp, tgt = _subdir(root, "input"), _subdir(root, "target")
    assert inp is not None and tgt is not None
    rainy = _keyed(_images(inp), None, inp)
    clean = _keyed(_images(tgt), None, tgt)
    return _pair_by_key(root, rainy, clean, "input/ and target/ must hold the same file names")


def _load_rain1400(root: Path) -> list[Pair]:
    rdir, cdir = _subdir(root, "rainy_image"), _subdir(root, "ground_truth")
    assert rdir is not None and cdir is not None
    clean = _keyed(_images(cdir), None, cdir)
    pairs, lonely, used = [], [], set()
    for p in _images(rdir):
        m = _RAIN1400.match(p.stem)
        key = m.group(1) if m else None
        if key is None or key not in clean:
            lonely.append(p)
            continue
        used.add(key)
        pairs.append(Pair(p, clean[key], p.stem))
    unused = [clean[k] for k in sorted(set(clean) - used, key=natural_key)]
    if lonely or unused:
        raise _unpaired_error(root, lonely, unused, "expected rainy_image/N_k for every ground_truth/N")
    return pairs


def _load_video(root: Path) -> list[Pair]:
    pairs = []
    for clip, rain_dir, gt_dir in _video_clips(root):
        if gt_dir is None:
            raise DataError(f"unpaired files in {root}: frame folder {rain_dir.name}/ has no {clip}_GT/ beside it")
        rainy = _keyed(_images(rain_dir), None, rain_dir)
        clean = _keyed(_images(gt_dir), None, gt_dir)
        if not rainy and not clean:
            continue
        pairs += _pair_by_key(root, rainy, clean, f"{rain_dir.name}/ and {gt_dir.name}/ must hold the same frame names",
                              prefix=f"{clip}/")
    return pairs


_LOADERS = {"prenet": _load_prenet, "mprnet": _load_mprnet, "rain1400": _load_rain1400, "video": _load_video}


def load_paired_set(root: "str | os.PathLike[str]") -> PairedSet:
    """The pairs of one data set folder, its layout detected. Raises :class:`DataError`."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    layouts = detect_layouts(root)
    if not layouts:
        raise DataError(f"no paired data layout recognised in {root}: expected {LAYOUT_HELP}")
    if len(layouts) > 1:
        raise DataError(f"{root} mixes several layouts ({', '.join(layouts)}); keep one data set per folder")
    pairs = _LOADERS[layouts[0]](root)
    if not pairs:
        raise DataError(f"{root} ({layouts[0]} layout) holds no image pairs")
    return PairedSet(root, layouts[0], pairs)


def find_paired_sets(root: "str | os.PathLike[str]") -> list[PairedSet]:
    """``root`` as one set, or, when it has no layout itself, each sub-folder that has one."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}" if not root.exists() else f"not a folder: {root}")
    if detect_layouts(root):
        return [load_paired_set(root)]
    subs = sorted((p for p in root.iterdir() if p.is_dir() and detect_layouts(p)), key=lambda p: natural_key(p.name))
    if not subs:
        raise DataError(f"no paired data layout recognised in {root} or its sub-folders: expected {LAYOUT_HELP}")
    return [load_paired_set(p) for p in subs]


def list_clean_images(root: "str | os.PathLike[str]") -> list[Path]:
    """Clean images to render rain on: the clean halves when ``root`` holds paired data,
    otherwise every image below ``root`` (frame folders of clean videos included)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"clean image folder not found: {root}" if not root.exists() else f"not a folder: {root}")
    try:
        sets = find_paired_sets(root)
    except DataError:
        sets = []
    if sets:
        log.info("%s holds paired data: rendering rain on its %d clean images",
                 root, sum(len({p.clean for p in s.pairs}) for s in sets))
        return sorted({p.clean for s in sets for p in s.pairs}, key=lambda p: natural_key(str(p)))
    found = sorted((p for p in root.rglob("*") if p.is_file() and is_image(p)), key=lambda p: natural_key(str(p)))
    if not found:
        raise DataError(f"no images found below {root}")
    return found


def is_test_split(path: "str | os.PathLike[str]") -> str | None:
    """The path component that marks ``path`` as a test split (``test``, ``Test100``,
    ``NTURain-synthetic``...), or None."""
    p = Path(path).expanduser()
    candidates = [p.absolute()]
    try:
        candidates.append(p.resolve())
    except OSError:
        pass
    for c in candidates:
        for part in c.parts:
            if _TEST_COMPONENT.match(part) or part in KNOWN_TEST_SETS:
                return part
    return None


def check_not_test_split(path: "str | os.PathLike[str]", option: str, allow: bool) -> None:
    """Refuse to train or validate on a test split unless explicitly allowed."""
    part = is_test_split(path)
    if part is not None and not allow:
        raise DataError(f"{option} {path} looks like a test split (path component {part!r}); training or "
                        "validating on test data invalidates its scores. Pass --allow-test-data to override")


# ------------------------------------------------------------------------------------ cache

class ImageStore:
    """Decoded uint8 RGB images, each decoded once and kept while the budget allows.

    Arrays are read-only. After :meth:`freeze` (done before worker processes fork) images
    beyond the budget are decoded on every use instead of being cached per worker.
    """

    def __init__(self, budget_bytes: int = 8 << 30) -> None:
        self.budget = int(budget_bytes)
        self._cache: dict[Path, np.ndarray] = {}
        self._bytes = 0
        self.frozen = False

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, path: Path) -> np.ndarray:
        image = self._cache.get(path)
        if image is not None:
            return image
        image = read_rgb(path)
        image.setflags(write=False)
        if not self.frozen and self._bytes + image.nbytes <= self.budget:
            self._cache[path] = image
            self._bytes += image.nbytes
        return image

    def preload(self, paths: Sequence[Path], progress: bool = False) -> None:
        from tqdm import tqdm

        for p in tqdm(paths, desc="decoding images", unit="img", disable=not progress, leave=False):
            self.get(p)

    def freeze(self) -> None:
        self.frozen = True


# ------------------------------------------------------------------------------- patch stream

def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``: independent of every other sample."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5EED, int(index)])))


def random_crop(images: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size x size`` window of equally sized images (reflect-padded when smaller)."""
    h, w = images[0].shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        images = [np.pad(im, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge") for im in images]
        h, w = images[0].shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return [im[y:y + size, x:x + size] for im in images]


FLIPS = ("none", "h", "hv")


def random_flip(images: Sequence[np.ndarray], mode: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Random horizontal (``h``) or horizontal and vertical (``hv``) flips, the same for all."""
    out = list(images)
    if mode in ("h", "hv") and rng.random() < 0.5:
        out = [im[:, ::-1] for im in out]
    if mode == "hv" and rng.random() < 0.5:
        out = [im[::-1] for im in out]
    return out


class PatchSource:
    """Draws training pairs: real pairs and/or rain rendered on clean images.

    ``sample(i)`` returns ``(rainy, clean)`` uint8 ``(patch, patch, 3)`` arrays, a pure
    function of ``(seed, i)``.
    """

    def __init__(self, pairs: Sequence[Pair], clean_images: Sequence[Path], store: ImageStore, patch: int,
                 seed: int = 0, flip: str = "h", synthetic_ratio: float | None = None,
                 synthesizer: "object | None" = None) -> None:
        if not pairs and not clean_images:
            raise DataError("no training data: give --data and/or --synthetic-clean")
        if clean_images and synthesizer is None:
            raise ValueError("clean images need a synthesizer")
        if flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS}")
        self.pairs = list(pairs)
        self.clean_images = list(clean_images)
        self.store = store
        self.patch = int(patch)
        self.seed = int(seed)
        self.flip = flip
        self.synthesizer = synthesizer
        if not self.clean_images:
            ratio = 0.0
        elif not self.pairs:
            ratio = 1.0
        else:
            ratio = 0.5 if synthetic_ratio is None else float(synthetic_ratio)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("synthetic ratio must be in [0, 1]")
        self.synthetic_ratio = ratio

    def paths(self) -> list[Path]:
        """Every image file the stream reads (for preloading)."""
        return [p for pair in self.pairs for p in (pair.rainy, pair.clean)] + list(self.clean_images)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = sample_rng(self.seed, index)
        synthetic = rng.random() < self.synthetic_ratio
        if synthetic:
            path = self.clean_images[int(rng.integers(len(self.clean_images)))]
            (clean,) = random_flip(random_crop([self.store.get(path)], self.patch, rng), self.flip, rng)
            rainy = self.synthesizer.render(np.ascontiguousarray(clean), rng)  # type: ignore[union-attr]
            return rainy, np.ascontiguousarray(clean)
        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        rainy_full, clean_full = self.store.get(pair.rainy), self.store.get(pair.clean)
        if rainy_full.shape != clean_full.shape:
            raise DataError(f"{pair.rainy} ({rainy_full.shape[1]}x{rainy_full.shape[0]}) and {pair.clean} "
                            f"({clean_full.shape[1]}x{clean_full.shape[0]}) differ in size")
        rainy, clean = random_flip(random_crop([rainy_full, clean_full], self.patch, rng), self.flip, rng)
        return np.ascontiguousarray(rainy), np.ascontiguousarray(clean)


class PatchDataset(Dataset):
    """Map-style view of a :class:`PatchSource` for ``DataLoader``: index -> (rainy, clean)
    uint8 tensors ``(3, P, P)``."""

    def __init__(self, source: PatchSource) -> None:
        self.source = source

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rainy, clean = self.source.sample(index)
        return (torch.from_numpy(rainy.transpose(2, 0, 1).copy()),
                torch.from_numpy(clean.transpose(2, 0, 1).copy()))


class StepBatchSampler:
    """Sample indices of each training step, from ``start_step`` on, for one rank.

    The global batch of step ``s`` is samples ``s*B .. s*B + B - 1`` (``B = per_rank * world``);
    rank ``r`` takes its ``r``-th slice, so any world size sees the same global batches.
    """

    def __init__(self, per_rank: int, rank: int = 0, world: int = 1, start_step: int = 0,
                 stop_step: int | None = None) -> None:
        self.per_rank, self.rank, self.world = int(per_rank), int(rank), int(world)
        self.start_step, self.stop_step = int(start_step), stop_step

    def batch_indices(self, step: int) -> list[int]:
        base = (step * self.world + self.rank) * self.per_rank
        return list(range(base, base + self.per_rank))

    def __iter__(self) -> Iterator[list[int]]:
        steps = itertools.count(self.start_step) if self.stop_step is None else range(self.start_step, self.stop_step)
        for step in steps:
            yield self.batch_indices(step)


def _worker_init(_: int) -> None:
    import signal

    import cv2

    # Ctrl-C / SIGTERM are the main process's business: it finishes the step, saves and
    # shuts the workers down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def make_loader(source: PatchSource, sampler: StepBatchSampler, workers: int = 0,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over the patch stream.

    Workers are spawned, not forked: a process forked after OpenCV's or OpenMP's thread pools
    have started can deadlock in them (seen in the full test suite), so each worker starts
    fresh and receives the decoded images once, pickled.
    """
    kwargs: dict = {}
    if workers > 0:
        kwargs = dict(num_workers=workers, worker_init_fn=_worker_init, prefetch_factor=4, persistent_workers=False,
                      multiprocessing_context="spawn")
    return torch.utils.data.DataLoader(PatchDataset(source), batch_sampler=sampler, pin_memory=pin_memory, **kwargs)
