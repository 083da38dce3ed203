"""lightning_info.fisher."""

__all__: list[str] = []
