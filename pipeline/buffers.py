"""Pinned-memory double buffering: a ring of host frame buffers and the streamer that uses it.

On CUDA, :class:`RingStreamer` keeps ``depth`` (2) batches in flight so that the host-to-device
copy of batch *i+1*, the network on batch *i* and the device-to-host copy of batch *i-1*
overlap with decoding and encoding on the host::

    host (producer)      copy stream              compute stream             copy stream
    batch -> pinned in -> H2D -> event(ready) --> wait, uint8->float/255,
                                                  network, float->uint8 --> event(done) -> wait,
                                                                             D2H -> pinned out,
                                                                             event(ready) -> consumer waits

Every buffer is allocated once per frame shape (:attr:`FrameRing.allocations` counts them):
page-locked host buffers (``pin_memory``) plus one device buffer per slot. A slot is never
reused before the copy that last touched it has finished (its events are waited on first),
and an output slot is never overwritten while its consumer holds it: a consumer receives a
:class:`Lease` and must :meth:`Lease.release` it (or use it as a context manager) when it
has finished reading :attr:`Lease.frames`. :meth:`RingStreamer.stream` does that for you
and yields arrays the caller owns (one host copy per batch).

On CPU the same ring logic runs with plain buffers and synchronous copies, so the ordering
and ownership rules are exercised (and tested) on machines without a GPU.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

STAGES = ("copy_in", "infer", "copy_out")


class SlotState(enum.Enum):
    FREE = "free"          # nobody owns it; may be acquired once its last copy has finished
    ACQUIRED = "acquired"  # owned by the producer (being filled / in flight)
    HELD = "held"          # an output slot handed to a consumer through a Lease


@dataclass(eq=False)
class Slot:
    """One ring entry: a ``(batch, H, W, 3)`` uint8 host buffer and its device twin.

    ``ready`` is recorded after the last asynchronous copy that writes or reads ``host``;
    ``device_free`` after the last kernel or copy that reads ``device``. On CPU both are
    ``None`` and ``device`` is ``host``.
    """

    index: int
    host: torch.Tensor
    device: torch.Tensor
    ready: "torch.cuda.Event | None" = None
    device_free: "torch.cuda.Event | None" = None
    timing: dict[str, Any] = field(default_factory=dict)
    host_seconds: dict[str, float] = field(default_factory=dict)
    state: SlotState = SlotState.FREE
    generation: int = 0

    @property
    def array(self) -> np.ndarray:
        """The host buffer as a NumPy array (a view, no copy)."""
        return self.host.numpy()

    def wait_ready(self) -> None:
        """Block the calling thread until the last copy touching the host buffer has finished."""
        if self.ready is not None:
            self.ready.synchronize()


class FrameRing:
    """``slots`` frame buffers of ``shape = (batch, H, W, 3)`` uint8, handed out round-robin.

    :meth:`acquire` returns the next slot in order once it is free (released by its previous
    owner) and its last copy has finished; :meth:`release` gives it back. Thread-safe: the
    producer may acquire in one thread while a consumer releases in another.
    On a CUDA ``device`` the host buffers are page-locked and each slot has a device buffer.
    """

    def __init__(self, slots: int, shape: tuple[int, int, int, int], device: "torch.device | str" = "cpu",
                 pin: bool | None = None) -> None:
        if slots < 1:
            raise ValueError(f"a ring needs at least one slot, got {slots}")
        if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
            raise ValueError(f"ring shape must be (batch, H, W, 3), got {shape}")
        self.device = torch.device(device)
        self.shape = tuple(int(s) for s in shape)
        cuda = self.device.type == "cuda"
        self.pinned = cuda if pin is None else pin
        self.allocations = 0
        self._cond = threading.Condition()
        self._next = 0
        self.slots: list[Slot] = []
        for i in range(slots):
            host = torch.empty(self.shape, dtype=torch.uint8, pin_memory=self.pinned)
            device_buf = torch.empty(self.shape, dtype=torch.uint8, device=self.device) if cuda else host
            self.allocations += 2 if cuda else 1
            slot = Slot(i, host, device_buf)
            if cuda:
                slot.ready = torch.cuda.Event(enable_timing=False)
                slot.device_free = torch.cuda.Event(enable_timing=False)
                slot.timing = {name: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                               for name in STAGES}
            self.slots.append(slot)

    def __len__(self) -> int:
        return len(self.slots)

    def free_count(self) -> int:
        with self._cond:
            return sum(s.state is SlotState.FREE for s in self.slots)

    def acquire(self, timeout: float | None = None) -> Slot:
        """The next slot in ring order, once free and its last copy has completed.

        Raises :class:`TimeoutError` if it is still owned after ``timeout`` seconds.
        """
        with self._cond:
            slot = self.slots[self._next]
            if not self._cond.wait_for(lambda: slot.state is SlotState.FREE, timeout):
                raise TimeoutError(
                    f"ring slot {slot.index} is still {slot.state.value} after {timeout}s: "
                    "a consumer has not released its lease")
            slot.state = SlotState.ACQUIRED
            slot.generation += 1
            self._next = (self._next + 1) % len(self.slots)
        slot.wait_ready()  # never overwrite a host buffer a copy is still reading or writing
        return slot

    def hold(self, slot: Slot) -> None:
        """Mark an acquired slot as handed to a consumer (still owned; not reusable)."""
        with self._cond:
            if slot.state is not SlotState.ACQUIRED:
                raise RuntimeError(f"slot {slot.index} is {slot.state.value}, cannot hand it out")
            slot.state = SlotState.HELD

    def release(self, slot: Slot, generation: int | None = None) -> None:
        """Give ``slot`` back. ``generation`` (from :attr:`Slot.generation` at acquire time)
        guards against releasing a slot twice or after it was reused."""
        with self._cond:
            if generation is not None and generation != slot.generation:
                raise RuntimeError(f"slot {slot.index} was released twice (generation {generation}, "
                                   f"now {slot.generation})")
            if slot.state is SlotState.FREE:
                raise RuntimeError(f"slot {slot.index} is already free")
            slot.state = SlotState.FREE
            self._cond.notify_all()


class Lease:
    """A derained batch in an output slot, owned by the consumer until :meth:`release`.

    :attr:`frames` waits for the slot's device-to-host copy, then returns a view of the pinned
    buffer: valid until ``release()``; copy it if it must outlive the lease. Releasing lets the
    streamer reuse the slot. Usable as a context manager (releases on exit).
    """

    def __init__(self, ring: FrameRing, slot: Slot, count: int, tag: Any,
                 on_release: "Any | None" = None) -> None:
        self.ring = ring
        self.slot = slot
        self.count = count
        self.tag = tag
        self.generation = slot.generation
        self._on_release = on_release
        self._released = False
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        return self._released

    @property
    def frames(self) -> np.ndarray:
        """``(count, H, W, 3)`` uint8 RGB, a view of the pinned output buffer."""
        if self._released:
            raise RuntimeError("lease already released: its buffer may have been reused")
        self.slot.wait_ready()
        return self.slot.array[: self.count]

    def copy(self) -> np.ndarray:
        """The frames as an array the caller owns (safe after ``release``)."""
        return self.frames.copy()

    def release(self) -> None:
        """Hand the output buffer back to the streamer. Idempotent."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self.slot.wait_ready()
        if self._on_release is not None:
            self._on_release(self)
        self.ring.release(self.slot, self.generation)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RingStreamer:
    """Runs an :class:`~pipeline.engine.Engine` over ``(batch, tag)`` items with rings of
    reusable frame buffers, keeping ``depth`` batches in flight on CUDA.

    ``spare_outputs`` extra output slots let a consumer (the encoder thread) hold that many
    leases while the GPU keeps working. ``lookahead`` batches are submitted before the oldest
    is handed out: ``depth`` on CUDA (copies and compute overlap), 1 on CPU, where work is
    synchronous and holding a batch back would only add latency. Buffers are sized for
    ``max(batch, engine.batch)`` frames. One stream at a time per streamer.
    Stage times (seconds, summed over batches; CUDA event times on a GPU) are in
    :attr:`stage_seconds`; :attr:`batches` and :attr:`frames` count what went through.
    """

    def __init__(self, engine: "Engine", depth: int = 2, spare_outputs: int = 2,
                 acquire_timeout: float | None = None) -> None:
        if depth < 1 or spare_outputs < 0:
            raise ValueError("depth must be >= 1 and spare_outputs >= 0")
        self.engine = engine
        self.depth = depth
        self.spare_outputs = spare_outputs
        self.acquire_timeout = acquire_timeout
        self.device = engine.device
        self.cuda = self.device.type == "cuda"
        self.lookahead = depth if self.cuda else 1
        self.inputs: FrameRing | None = None
        self.outputs: FrameRing | None = None
        self.ring_allocations = 0
        self.stage_seconds = {name: 0.0 for name in STAGES}
        self.batches = 0
        self.frames = 0
        self._stats_lock = threading.Lock()
        if self.cuda:
            self.copy_stream = torch.cuda.Stream(self.device)
            self.compute_stream = torch.cuda.Stream(self.device)

    # -- rings -----------------------------------------------------------------------------
    def _ensure_rings(self, batch: np.ndarray) -> None:
        n, h, w, _ = batch.shape
        if self.outputs is not None and self.outputs.shape[1:3] == (h, w) and self.outputs.shape[0] >= n:
            return
        if self.outputs is not None:
            # Leases still out keep their old ring (and its buffers) alive until released; the
            # streams are drained so no queued copy or kernel touches a buffer being dropped.
            log.info("frame size changed to %dx%d: reallocating frame buffers", w, h)
            if self.cuda:
                self.copy_stream.synchronize()
                self.compute_stream.synchronize()
        size = max(n, int(getattr(self.engine, "batch", 1)),
                   self.outputs.shape[0] if self.outputs is not None else 0)
        shape = (size, h, w, 3)
        self.inputs = FrameRing(self.depth, shape, self.device)
        self.outputs = FrameRing(self.depth + self.spare_outputs, shape, self.device)
        self.ring_allocations += self.inputs.allocations + self.outputs.allocations

    def _account(self, lease: Lease) -> None:
        slot = lease.slot
        with self._stats_lock:
            self.batches += 1
            self.frames += lease.count
            for name, seconds in slot.host_seconds.items():
                self.stage_seconds[name] += seconds
            if self.cuda:
                for name, (start, end) in slot.timing.items():
                    self.stage_seconds[name] += start.elapsed_time(end) / 1000.0

    # -- one batch -------------------------------------------------------------------------
    @torch.inference_mode()
    def _submit(self, batch: np.ndarray, tag: Any) -> Lease:
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {batch.shape} {batch.dtype}")
        self._ensure_rings(batch)
        assert self.inputs is not None and self.outputs is not None
        n = batch.shape[0]
        out = self.outputs.acquire(self.acquire_timeout)
        src = self.inputs.acquire(self.acquire_timeout)
        try:
            t0 = time.perf_counter()
            np.copyto(src.array[:n], batch)  # pinned staging copy (its previous H2D has finished)
            out.host_seconds = {"copy_in": time.perf_counter() - t0}
            if self.cuda:
                self._submit_cuda(src, out, n)
            else:
                self._submit_cpu(src, out, n)
        except BaseException:
            self.outputs.release(out)
            raise
        finally:
            self.inputs.release(src)  # reuse waits on src.ready (H2D done) in acquire()
        self.outputs.hold(out)
        return Lease(self.outputs, out, n, tag, on_release=self._account)

    def _submit_cpu(self, src: Slot, out: Slot, n: int) -> None:
        engine = self.engine
        t0 = time.perf_counter()
        frames = engine.postprocess(engine.run_tiled(engine.preprocess(src.host[:n])))
        t1 = time.perf_counter()
        out.host[:n].copy_(frames)
        t2 = time.perf_counter()
        out.host_seconds.update(infer=t1 - t0, copy_out=t2 - t1)

    def _submit_cuda(self, src: Slot, out: Slot, n: int) -> None:
        engine, copy, compute = self.engine, self.copy_stream, self.compute_stream
        timing = out.timing
        with torch.cuda.stream(copy):
            copy.wait_event(src.device_free)           # compute has finished reading src.device
            timing["copy_in"][0].record(copy)
            src.device[:n].copy_(src.host[:n], non_blocking=True)
            timing["copy_in"][1].record(copy)
            src.ready.record(copy)                      # H2D done: host buffer reusable
        with torch.cuda.stream(compute):
            compute.wait_event(src.ready)
            compute.wait_event(out.device_free)        # previous D2H from out.device has finished
            timing["infer"][0].record(compute)
            x = engine.preprocess(src.device[:n])
            src.device_free.record(compute)
            out.device[:n].copy_(engine.postprocess(engine.run_tiled(x)))
            timing["infer"][1].record(compute)
        with torch.cuda.stream(copy):
            copy.wait_event(timing["infer"][1])
            timing["copy_out"][0].record(copy)
            out.host[:n].copy_(out.device[:n], non_blocking=True)
            timing["copy_out"][1].record(copy)
            out.ready.record(copy)                      # consumer waits on this before reading
            out.device_free.record(copy)

    # -- streams ---------------------------------------------------------------------------
    def leases(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[Lease]:
        """Yield a :class:`Lease` per ``(batch, tag)``, in order. The consumer must release each
        lease (it may do so from another thread); at most ``spare_outputs`` may be held while
        the next batch is being produced."""
        pending: deque[Lease] = deque()
        try:
            for batch, tag in items:
                pending.append(self._submit(batch, tag))
                while len(pending) >= self.lookahead:
                    yield pending.popleft()
            while pending:
                yield pending.popleft()
        finally:
            for lease in pending:  # abandoned mid-stream: nobody will read these
                lease.release()

    def stream(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[tuple[np.ndarray, T]]:
        """Like :meth:`leases` but yields ``(frames, tag)`` with arrays the caller owns."""
        for lease in self.leases(items):
            try:
                frames = lease.copy()
            finally:
                lease.release()
            yield frames, lease.tag

    def reset_stats(self) -> None:
        with self._stats_lock:
            self.stage_seconds = {name: 0.0 for name in STAGES}
            self.batches = 0
            self.frames = 0
