"""honed.api layer."""
