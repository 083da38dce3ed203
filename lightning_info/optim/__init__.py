"""lightning_info.optim."""

__all__: list[str] = []
