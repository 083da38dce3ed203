"""lightning_info.attention."""

__all__: list[str] = []
