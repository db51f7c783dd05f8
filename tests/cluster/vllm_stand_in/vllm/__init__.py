"""Stand-in for vLLM in the process kubelet (see api_server.py)."""
