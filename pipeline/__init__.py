"""Video side of derain-video: decoding, devices, inference engines, encoding, live sources.

``pipeline`` knows video and devices, not training; it gets networks from :mod:`model`.
"""
