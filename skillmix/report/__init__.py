"""Reports: summary.json, metrics.csv, report.md and report.html with plots."""
