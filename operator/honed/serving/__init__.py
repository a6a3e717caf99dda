"""honed.serving layer."""
