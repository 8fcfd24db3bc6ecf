"""What is served: the model catalog, GPU tier facts, and the Ray Serve LLM configuration.

This package never imports Pulumi or `infra`; `infra` builds on it.
"""
