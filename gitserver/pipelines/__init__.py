"""Push-triggered pipelines: the durable SQL queue, the worker and its steps."""
