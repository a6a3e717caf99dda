"""honed.feedback layer."""
