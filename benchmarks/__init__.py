"""Speed and memory measurements (``derain-bench``); nothing here is asserted in tests.

* :mod:`benchmarks.cli` -- ``derain-bench``: network fps per backend, precision, batch and
  resolution, and end-to-end pipeline fps with a per-stage breakdown; a table and JSON.
* :mod:`benchmarks.network_fps` -- the network-alone measurement.
* :mod:`benchmarks.end_to_end` -- the whole pipeline on a generated clip, in process.
* :mod:`benchmarks.model_costs` -- ``derain-bench costs``: parameters, MACs and CPU time per preset.
* :mod:`benchmarks.pipeline_overhead` -- the pipeline's cost over the network, and its memory.
* :mod:`benchmarks.live_latency` -- glass-to-glass latency and reconnect time of a live camera.

Results and the commands that produced them are in ``benchmarks/RESULTS.md``.
"""
