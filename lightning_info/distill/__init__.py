"""lightning_info.distill."""

__all__: list[str] = []
