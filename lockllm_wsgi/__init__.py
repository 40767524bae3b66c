"""lockllm-wsgi: a prompt-injection filtering gateway for LLM APIs, run inside Apache with mod_wsgi."""

__version__ = "0.1.0"
