"""Self-contained HTML reports read from the results store."""
