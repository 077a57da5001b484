"""Placeholder until the gather op lands (being written now)."""


def _missing(*args, **kwargs):
    raise NotImplementedError("pyretro.ops.gather is being implemented")


gather_neighbors = _missing
