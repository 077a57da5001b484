"""Placeholder until the rope op lands (being written now)."""


def _missing(*args, **kwargs):
    raise NotImplementedError("pyretro.ops.rope is being implemented")


rope = _missing
rope_ = _missing
