"""Turn command results into Block Kit, terminal output and JSON."""
