"""longread gateway: plans, runs and caches LLM analyses of long documents behind gRPC."""

__version__ = "0.1.0"
