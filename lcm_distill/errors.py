"""The configuration error every layer raises, kept in a module of its own so that the config schema (config.py)
and its cross-field rules (config_checks.py) can both use it without importing each other."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the dotted key and what to do."""
