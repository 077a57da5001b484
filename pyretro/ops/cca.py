"""Placeholder until the cca op lands (being written now)."""


def _missing(*args, **kwargs):
    raise NotImplementedError("pyretro.ops.cca is being implemented")


chunked_cross_attention = _missing
