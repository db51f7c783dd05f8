"""Plans, run context, task runners and aggregation: what every executor runs."""
