"""Executors: what runs a plan's tasks. Peers over the same plan, tasks and store:
``local`` runs them in this process; ``skillmix.k8s`` launches them as Kubernetes Jobs."""
