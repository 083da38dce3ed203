"""Pure tensor math of the losses (no Lightning, no state)."""

__all__: list[str] = []
