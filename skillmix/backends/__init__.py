"""Model backends: the OpenAI-compatible client, rate limiting, retries, the mock server."""
