"""The daemon: ``agent --config /etc/agent.toml`` builds one App from a config file — built-in
devices, the user's modules, Home Assistant discovery — and runs it."""

DEFAULT_CONFIG = "/etc/agent.toml"
"""Where the daemon's config file is when ``--config`` is not given."""
