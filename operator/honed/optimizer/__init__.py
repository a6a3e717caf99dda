"""The optimization engine: convert, build candidates, validate, measure, select, report."""
