"""Frame rings and the double-buffered streamer: ordering, ownership, no per-frame allocation.

These run on CPU, where the ring logic is the same as on CUDA with synchronous copies; the
CUDA test at the end runs where a GPU exists.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np
import pytest
import torch

import model
from pipeline.backends import BufferedEngine, create_engine
from pipeline.buffers import FrameRing, SlotState

TINY = model.DerainConfig(features=8, stages=2, blocks=1, steps=1, wavelet="decimated", fusion_reduction=4)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = model.build(TINY).eval()
    for p in net.parameters():  # not the identity, so a wrong or stale buffer shows
        p.data.normal_(0, 0.1)
    return net


def batches(count, n=2, h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8) for _ in range(count)]


def test_ring_hands_out_slots_in_order_and_never_early():
    ring = FrameRing(3, (2, 4, 6, 3))
    assert ring.allocations == 3 and not ring.pinned
    slots = [ring.acquire() for _ in range(3)]
    assert [s.index for s in slots] == [0, 1, 2]
    assert all(s.state is SlotState.ACQUIRED for s in slots)
    with pytest.raises(TimeoutError, match="slot 0"):
        ring.acquire(timeout=0.05)  # slot 0 is still owned: it must not be handed out again
    ring.release(slots[1])
    with pytest.raises(TimeoutError):  # slot 1 is free, but ring order says slot 0 comes next
        ring.acquire(timeout=0.05)
    gen = slots[0].generation
    ring.release(slots[0], gen)
    again = ring.acquire(timeout=1)
    assert again is slots[0] and again.generation == gen + 1
    with pytest.raises(RuntimeError, match="released twice"):
        ring.release(again, gen)  # a stale generation: the lease of the previous use
    ring.release(again, gen + 1)
    with pytest.raises(RuntimeError, match="already free"):
        ring.release(again)


def test_ring_acquire_waits_for_a_release_from_another_thread():
    ring = FrameRing(1, (1, 2, 2, 3))
    slot = ring.acquire()
    threading.Timer(0.1, ring.release, args=(slot,)).start()
    t0 = time.perf_counter()
    assert ring.acquire(timeout=5) is slot
    assert time.perf_counter() - t0 >= 0.08


def test_ring_rejects_bad_shapes():
    with pytest.raises(ValueError, match="batch, H, W, 3"):
        FrameRing(2, (1, 8, 8, 4))
    with pytest.raises(ValueError, match="at least one slot"):
        FrameRing(0, (1, 8, 8, 3))


def test_stream_matches_infer_in_order_with_a_partial_last_batch(net):
    engine = create_engine(net, device="cpu", backend="eager")
    items = batches(5) + batches(1, n=1, seed=9)
    out = list(engine.stream((b, f"tag{i}") for i, b in enumerate(items)))
    assert [tag for _, tag in out] == [f"tag{i}" for i in range(6)]
    for (frames, _), batch in zip(out, items):
        assert frames.shape == batch.shape and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, engine.infer(batch))
    assert not np.array_equal(out[0][0], items[0])  # the network really ran
    times = engine.stage_times()
    assert times["batches"] == 6 and times["frames"] == 11 and times["infer"] > 0


def test_buffers_are_allocated_once_not_per_frame(net, caplog):
    engine = BufferedEngine(net, "cpu", depth=2, spare_outputs=2)
    leases_seen = []
    for lease in engine.stream_leased((b, i) for i, b in enumerate(batches(12))):
        with lease:
            leases_seen.append(lease.slot.host.data_ptr())
    streamer = engine.streamer
    assert streamer.ring_allocations == 2 + 4  # 2 input + (2 + 2 spare) output slots, once
    assert len(set(leases_seen)) == 4  # the same four output buffers, round-robin
    list(engine.stream((b, i) for i, b in enumerate(batches(3))))
    assert streamer.ring_allocations == 6  # a second stream of the same size reuses them
    with caplog.at_level(logging.INFO, logger="pipeline.buffers"):
        list(engine.stream([(batches(1, h=20)[0], 0)]))
    assert streamer.ring_allocations == 12 and "reallocating" in caplog.text


def test_a_held_output_slot_is_never_reused_and_its_frames_stay_intact(net):
    """A slow consumer thread holds leases; the producer must wait instead of overwriting."""
    engine = BufferedEngine(net, "cpu", depth=2, spare_outputs=1)
    items = batches(10, seed=3)
    expected = [engine.infer(b) for b in items]
    handed: queue.Queue = queue.Queue()
    failures: list[str] = []
    order: list[int] = []
    last_lease_of_slot: dict[int, object] = {}

    def consumer() -> None:
        while (lease := handed.get()) is not None:
            previous = last_lease_of_slot.get(lease.slot.index)
            if previous is not None and not previous.released:
                failures.append(f"slot {lease.slot.index} reused while batch {previous.tag} was held")
            last_lease_of_slot[lease.slot.index] = lease
            time.sleep(0.02)  # "encoding": the producer runs ahead meanwhile
            if not np.array_equal(lease.frames, expected[lease.tag]):
                failures.append(f"batch {lease.tag} was overwritten while held")
            order.append(lease.tag)
            lease.release()

    thread = threading.Thread(target=consumer)
    thread.start()
    held_at_handout = []
    for lease in engine.stream_leased((b, i) for i, b in enumerate(items)):
        held_at_handout.append(len(engine.streamer.outputs) - engine.streamer.outputs.free_count())
        handed.put(lease)
    handed.put(None)
    thread.join(10)
    assert not failures, failures
    assert order == list(range(10))
    assert max(held_at_handout) <= 3  # depth 2 + 1 spare: the ring is the only buffer space
    assert engine.streamer.outputs.free_count() == 3


def test_frame_size_change_mid_stream_keeps_order_and_content(net):
    engine = BufferedEngine(net, "cpu")
    engine.streamer.lookahead = 2  # a lease of the old size is still pending at the change
    items = batches(2) + batches(2, h=20, w=12, seed=5) + batches(1, seed=6)
    expected = [engine.infer(b) for b in items]
    out = []
    for lease in engine.stream_leased((b, i) for i, b in enumerate(items)):
        with lease:
            out.append((lease.copy(), lease.tag))
    assert [t for _, t in out] == list(range(5))
    for (frames, _), ref in zip(out, expected):
        np.testing.assert_array_equal(frames, ref)


def test_released_lease_cannot_be_read_and_release_is_idempotent(net):
    engine = BufferedEngine(net, "cpu")
    lease = next(engine.stream_leased(iter([(batches(1)[0], "only")])))
    kept = lease.copy()
    lease.release()
    lease.release()
    with pytest.raises(RuntimeError, match="released"):
        _ = lease.frames
    assert kept.shape == (2, 16, 24, 3)


def test_abandoned_stream_gives_its_pending_buffers_back(net):
    engine = BufferedEngine(net, "cpu", depth=2, spare_outputs=2)
    engine.streamer.lookahead = 2  # as on CUDA: one batch submitted ahead of the one handed out
    gen = engine.stream_leased((b, i) for i, b in enumerate(batches(6)))
    first = next(gen)  # batch 1 is already submitted and pending inside the generator
    assert engine.streamer.outputs.free_count() == len(engine.streamer.outputs) - 2
    gen.close()
    outputs = engine.streamer.outputs
    assert outputs.free_count() == len(outputs) - 1  # only the lease the caller holds
    first.release()
    assert outputs.free_count() == len(outputs)


def test_stream_rejects_bad_frames(net):
    engine = BufferedEngine(net, "cpu")
    with pytest.raises(ValueError, match="uint8"):
        list(engine.stream([(np.zeros((1, 8, 8, 3), np.float32), 0)]))


@pytest.mark.cuda
def test_cuda_double_buffering_matches_infer(net):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here)")
    engine = create_engine(net, device="cuda", backend="eager", precision="fp32")
    items = batches(8, h=64, w=96)
    expected = [engine.infer(b) for b in items]
    out = []
    for lease in engine.stream_leased((b, i) for i, b in enumerate(items)):
        with lease:
            assert lease.slot.host.is_pinned()
            out.append((lease.copy(), lease.tag))
    assert [t for _, t in out] == list(range(8))
    for (frames, _), ref in zip(out, expected):
        np.testing.assert_array_equal(frames, ref)
    times = engine.stage_times()
    assert times["copy_in"] > 0 and times["infer"] > 0 and times["copy_out"] > 0
    assert engine.streamer.ring_allocations == 2 * (2 + 4)  # host + device buffer per slot
