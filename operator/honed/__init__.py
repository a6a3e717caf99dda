"""honed: make trained models fast and serve them on Triton."""

__version__ = "0.1.0"
