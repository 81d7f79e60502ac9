"""train.datasets: layout detection from real PNG/JPEG files, layout errors, the test-split
guard, the image cache and the deterministic patch stream (workers, resume, DDP slices)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from train.datasets import (ImageStore, PatchSource, StepBatchSampler, check_not_test_split, find_paired_sets,
                            is_test_split, list_clean_images, load_paired_set, make_loader)
from train.images import DataError, read_rgb, write_rgb
from train.synthesis import RainSynthesizer


def clean_image(i: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A distinct, textured clean image for pair ``i``."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 5 + i * 37) % 256, (y * 6 + i * 11) % 256, ((x + y) * 3 + i * 53) % 256], -1)
    return img.astype(np.uint8)


def rainy_of(clean: np.ndarray) -> np.ndarray:
    return (255 - clean).astype(np.uint8)  # a reversible "rain" so pairing can be checked


def write_pair(rain_path: Path, clean_path: Path, i: int, **kw) -> None:
    c = clean_image(i, **kw)
    write_rgb(clean_path, c)
    write_rgb(rain_path, rainy_of(c))


def assert_pairs_match(pset, lossless: bool = True) -> None:
    for p in pset.pairs:
        r, c = read_rgb(p.rainy), read_rgb(p.clean)
        assert r.shape == c.shape
        diff = np.abs(r.astype(int) - (255 - c.astype(int))).mean()
        assert diff < (0.5 if lossless else 6.0), p


def test_prenet_layout_side_by_side(tmp_path):
    for i in (1, 2, 10):
        write_pair(tmp_path / f"rain-{i}.png", tmp_path / f"norain-{i}.png", i)
    (tmp_path / "README.txt").write_text("not an image")
    s = load_paired_set(tmp_path)
    assert s.layout == "prenet" and [p.name for p in s.pairs] == ["1", "2", "10"]
    assert_pairs_match(s)


def test_prenet_layout_with_rainy_folder(tmp_path):
    for i in (1, 2):
        write_pair(tmp_path / "rainy" / f"rain-{i:03d}.png", tmp_path / f"norain-{i:03d}.png", i)
    s = load_paired_set(tmp_path)
    assert s.layout == "prenet" and len(s) == 2
    assert all(p.rainy.parent.name == "rainy" for p in s.pairs)
    assert_pairs_match(s)


def test_mprnet_layout_with_jpeg(tmp_path):
    for i in range(3):
        write_pair(tmp_path / "input" / f"{i}.jpg", tmp_path / "target" / f"{i}.jpg", i)
    s = load_paired_set(tmp_path)
    assert s.layout == "mprnet" and len(s) == 3
    assert_pairs_match(s, lossless=False)


def test_rain1400_layout_many_rainy_per_clean(tmp_path):
    for n in (1, 2):
        c = clean_image(n)
        write_rgb(tmp_path / "ground_truth" / f"{n}.jpg", c)
        for k in (1, 2, 14):
            write_rgb(tmp_path / "rainy_image" / f"{n}_{k}.jpg", rainy_of(c))
    s = load_paired_set(tmp_path)
    assert s.layout == "rain1400" and len(s) == 6
    assert {p.clean.name for p in s.pairs} == {"1.jpg", "2.jpg"}
    assert all(p.rainy.stem.split("_")[0] == p.clean.stem for p in s.pairs)
    assert_pairs_match(s, lossless=False)
    # Each clean image is used once for synthetic rain.
    assert len(list_clean_images(tmp_path)) == 2


def test_video_frame_folder_layout(tmp_path):
    for clip in ("a1", "b2"):
        for f in range(1, 4):
            write_pair(tmp_path / f"{clip}_Rain" / f"{f:05d}.jpg", tmp_path / f"{clip}_GT" / f"{f:05d}.jpg", f)
    s = load_paired_set(tmp_path)
    assert s.layout == "video" and len(s) == 6
    assert s.pairs[0].name == "a1/00001" and s.pairs[-1].name == "b2/00003"
    assert_pairs_match(s, lossless=False)


def test_folder_of_sets_and_real_shared_layouts(tmp_path, shared_data):
    for name in ("Rain100L", "Test100"):
        for i in (1, 2):
            write_pair(tmp_path / name / "input" / f"{i}.png", tmp_path / name / "target" / f"{i}.png", i)
    sets = find_paired_sets(tmp_path)
    assert [s.name for s in sets] == ["Rain100L", "Test100"]
    expected = {"Rain100L/test": ("prenet", 100), "RainTrainL-sample": ("prenet", 10),
                "RainTrainH-sample": ("prenet", 12), "Rain13K-sample": ("mprnet", 40),
                "NTURain-synthetic": ("video", 168)}
    for rel, (layout, n) in expected.items():
        s = load_paired_set(shared_data / rel)
        assert (s.layout, len(s)) == (layout, n), rel


@pytest.mark.parametrize("case, match", [
    ("empty", "no paired data layout recognised"),
    ("missing_clean", r"rain-3\.png"),
    ("missing_rainy", r"norain-2\.png"),
    ("mprnet_names", r"target/b\.png"),
    ("rain1400_orphan", r"rainy_image/7_1\.png"),
    ("video_no_gt", r"c1_Rain/ has no c1_GT/"),
    ("mixed", "mixes several layouts"),
])
def test_layout_errors_name_the_problem(tmp_path, case, match):
    if case == "missing_clean":
        write_pair(tmp_path / "rain-1.png", tmp_path / "norain-1.png", 1)
        write_rgb(tmp_path / "rain-3.png", clean_image(3))
    elif case == "missing_rainy":
        write_pair(tmp_path / "rainy" / "rain-1.png", tmp_path / "norain-1.png", 1)
        write_rgb(tmp_path / "norain-2.png", clean_image(2))
    elif case == "mprnet_names":
        write_pair(tmp_path / "input" / "a.png", tmp_path / "target" / "a.png", 1)
        write_rgb(tmp_path / "target" / "b.png", clean_image(2))
    elif case == "rain1400_orphan":
        write_pair(tmp_path / "rainy_image" / "1_1.png", tmp_path / "ground_truth" / "1.png", 1)
        write_rgb(tmp_path / "rainy_image" / "7_1.png", clean_image(7))
    elif case == "video_no_gt":
        write_rgb(tmp_path / "c1_Rain" / "00001.png", clean_image(1))
    elif case == "mixed":
        write_pair(tmp_path / "rain-1.png", tmp_path / "norain-1.png", 1)
        write_pair(tmp_path / "input" / "1.png", tmp_path / "target" / "1.png", 1)
    with pytest.raises(DataError, match=match) as info:
        load_paired_set(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_folder_and_unreadable_image(tmp_path):
    with pytest.raises(DataError, match="not found"):
        find_paired_sets(tmp_path / "nope")
    write_pair(tmp_path / "rain-1.png", tmp_path / "norain-1.png", 1)
    (tmp_path / "rain-2.png").write_bytes(b"this is not a png")
    write_rgb(tmp_path / "norain-2.png", clean_image(2))
    s = load_paired_set(tmp_path)
    store = ImageStore()
    with pytest.raises(DataError, match=r"cannot read image .*rain-2\.png"):
        store.preload([p for pair in s.pairs for p in (pair.rainy, pair.clean)])


def test_size_mismatch_is_reported(tmp_path):
    write_rgb(tmp_path / "rain-1.png", clean_image(1, h=40))
    write_rgb(tmp_path / "norain-1.png", clean_image(1, h=44))
    source = PatchSource(load_paired_set(tmp_path).pairs, [], ImageStore(), 16)
    with pytest.raises(DataError, match="differ in size"):
        source.sample(0)


def test_test_split_guard():
    assert is_test_split("/data/Rain100L/test") == "test"
    assert is_test_split("/data/Datasets/Test100/input") == "Test100"
    assert is_test_split("../shared/data/NTURain-synthetic") == "NTURain-synthetic"
    assert is_test_split("/data/RainTrainH") is None
    assert is_test_split("/tmp/pytest-of-x/test_guard0/train") is None
    with pytest.raises(DataError, match="--allow-test-data"):
        check_not_test_split("/data/Rain100L/test", "--data", allow=False)
    check_not_test_split("/data/Rain100L/test", "--data", allow=True)


def test_image_store_decodes_once_and_respects_its_budget(tmp_path):
    write_rgb(tmp_path / "a.png", clean_image(1))
    store = ImageStore()
    first = store.get(tmp_path / "a.png")
    assert store.get(tmp_path / "a.png") is first and len(store) == 1
    assert not first.flags.writeable
    tiny = ImageStore(budget_bytes=10)
    assert tiny.get(tmp_path / "a.png") is not tiny.get(tmp_path / "a.png") and len(tiny) == 0


@pytest.fixture()
def source(tmp_path):
    for i in range(4):
        write_pair(tmp_path / "pairs" / f"rain-{i}.png", tmp_path / "pairs" / f"norain-{i}.png", i, h=30, w=50)
    for i in range(3):
        write_rgb(tmp_path / "clean" / "sub" / f"{i}.png", clean_image(10 + i, h=36, w=36))
    pairs = load_paired_set(tmp_path / "pairs").pairs
    return PatchSource(pairs, list_clean_images(tmp_path / "clean"), ImageStore(), 24, seed=5, flip="hv",
                       synthetic_ratio=0.5, synthesizer=RainSynthesizer((0.2, 0.5)))


def test_patches_are_deterministic_aligned_and_mixed(source):
    kinds = []
    for i in range(40):
        r1, c1 = source.sample(i)
        r2, c2 = source.sample(i)
        assert np.array_equal(r1, r2) and np.array_equal(c1, c2)
        assert r1.shape == c1.shape == (24, 24, 3) and r1.dtype == np.uint8
        aligned = np.array_equal(r1.astype(int), 255 - c1.astype(int))
        kinds.append(aligned)
        if not aligned:  # synthetic rain only brightens (no haze at this strength range is tiny)
            assert (r1.astype(int) >= c1.astype(int) - 1).mean() > 0.99
    assert 8 < sum(kinds) < 32  # both real and synthetic samples, about half each
    assert not np.array_equal(source.sample(0)[1], source.sample(1)[1])
    other = PatchSource(source.pairs, source.clean_images, source.store, 24, seed=6, flip="hv",
                        synthesizer=source.synthesizer)
    assert not all(np.array_equal(source.sample(i)[1], other.sample(i)[1]) for i in range(4))


def test_small_images_are_padded_to_the_patch(tmp_path):
    write_pair(tmp_path / "rain-1.png", tmp_path / "norain-1.png", 1, h=12, w=20)
    src = PatchSource(load_paired_set(tmp_path).pairs, [], ImageStore(), 32)
    r, c = src.sample(3)
    assert r.shape == (32, 32, 3) and np.array_equal(r.astype(int), 255 - c.astype(int))


def test_loader_with_workers_gives_the_same_batches_and_ddp_slices_add_up(source):
    source.store.preload(source.paths())
    source.store.freeze()
    plain = list(make_loader(source, StepBatchSampler(4, start_step=0, stop_step=3), workers=0))
    forked = list(make_loader(source, StepBatchSampler(4, start_step=0, stop_step=3), workers=2))
    for (a, b), (c, d) in zip(plain, forked):
        assert a.dtype == torch.uint8 and a.shape == (4, 3, 24, 24)
        assert torch.equal(a, c) and torch.equal(b, d)
    resumed = list(make_loader(source, StepBatchSampler(4, start_step=2, stop_step=3)))
    assert torch.equal(resumed[0][0], plain[2][0])
    halves = [list(make_loader(source, StepBatchSampler(2, rank=r, world=2, stop_step=3))) for r in (0, 1)]
    for step in range(3):
        assert torch.equal(torch.cat([halves[0][step][0], halves[1][step][0]]), plain[step][0])
