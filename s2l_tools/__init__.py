"""s2l-tools: Scribble2Label cell segmentation from a few scribbles.

Data flows one way::

    images + scribbles -> dataset -> trainer (+ EMA store) -> checkpoint
        -> export -> predict / CellProfiler / Fiji
"""

__version__ = "0.1.0"
