"""Plans, task runners and the local executor."""
