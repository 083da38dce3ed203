"""lightning_info.losses."""

__all__: list[str] = []
