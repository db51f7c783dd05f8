"""Executors: what runs a plan's tasks. Peers over the same plan, tasks and store behind one
interface (``base.Executor``): ``local`` runs them in this process, ``kubernetes`` launches
them as Jobs whose pods run them through ``pod``; ``reasoning`` runs a reasoning task."""
