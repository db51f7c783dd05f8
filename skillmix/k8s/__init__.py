"""Kubernetes executor: values from a plan, helm template, submit/watch/status/logs/cancel."""
