"""lightning_info.metrics."""

__all__: list[str] = []
