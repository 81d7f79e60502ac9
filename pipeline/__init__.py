"""Video side of derain-video: decoding, devices, inference engines, encoding, live sources.

``pipeline`` knows video and devices, not training; it gets networks from :mod:`model`.
"""
import os as _os

# Decoding, inference and encoding threads share the CPU: OpenMP threads that spin while
# waiting make PyTorch many times slower then (measured in train/__init__.py's note). Must be
# set before torch loads, which is the case for derain-video and derain-bench.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
