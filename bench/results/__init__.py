"""The results store: the schema and its migrations, rows and runs, the one writer of a run's
record, per-round reduction, exports. The only owner of what is on disk."""
