"""s2l-tools: Scribble2Label cell segmentation from a few scribbles.

Data flows one way, and the subpackages follow it::

    io (images, ROI sets) -> data (scribble masks, checks, augmentation)
        -> training (+ EMA store; classic/ for fast starts) -> run folder
        -> inference (predict, export) -> interop (CellProfiler) / Fiji
    evaluation scores masks; cli holds the ``s2l-*`` commands.

See docs/contributing.md for where a new method, file format or tool goes.
"""

import importlib

__version__ = "0.1.0"

#: modules of the flat layout (before 0.2) -> where they live now; ``from s2l_tools
#: import onnx_inference`` (CellProfiler modules installed by older versions) keeps working
_MOVED = {
    "onnx_inference": "s2l_tools.inference.onnx",
    "tiling": "s2l_tools.inference.tiling",
    "postprocess": "s2l_tools.inference.postprocess",
    "predict": "s2l_tools.inference.predict",
    "export": "s2l_tools.inference.export",
    "roi": "s2l_tools.io.roi",
    "images": "s2l_tools.io.images",
}


def __getattr__(name):
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 's2l_tools' has no attribute {name!r}")
