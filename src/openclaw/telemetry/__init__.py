"""Telemetry: the event schema, the sources that produce events, and the stores that keep them."""
