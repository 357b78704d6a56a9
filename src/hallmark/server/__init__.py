"""The OpenAI-compatible HTTP server (`hallmark serve`): config, protocol, serving, routes."""
