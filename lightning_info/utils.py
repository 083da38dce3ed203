"""Public utilities shared by the parts: activation capture by module name or glob."""

from lightning_info._internal.capture import ActivationCapture, resolve_module_names

__all__ = ["ActivationCapture", "resolve_module_names"]
