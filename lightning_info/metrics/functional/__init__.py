"""Pure tensor math of the information metrics (no Lightning, no state)."""

__all__: list[str] = []
