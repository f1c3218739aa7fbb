"""Other people's tools: installing the CellProfiler module."""
