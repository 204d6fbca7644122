"""Loopback servers and fixtures shared by the tests and the benchmarks: a scripted OpenAI-compatible server
for fault injection, `transformers serve` and vLLM processes, a batch-file runner, and the service on a real
uvicorn. Standard library only (uvicorn is imported where a service is run), so importing it costs nothing."""
