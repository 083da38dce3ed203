"""Shared utilities (validation, activation capture). Not public API: import from ``lightning_info.utils``."""
