"""honed.controller layer."""
