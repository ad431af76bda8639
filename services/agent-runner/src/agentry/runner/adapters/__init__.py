"""Adapters that connect the runner's ports to in-process state, Redis and RabbitMQ."""
