"""Model helpers shared by the evaluators: mode names, which model serves a mode, the Retro gate rule."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pyretro.model import GPT, RetroModel

MODES = ("gpt", "retro", "retro-decoder", "retro-retrieve")
MODE_HELP = {
    "gpt": "GPT, context passages in the prompt",
    "retro": "Retro, context in the prompt and as encoder neighbours",
    "retro-decoder": "Retro decoder only (retrieval=False: encoder ablated)",
    "retro-retrieve": "Retro, context in the prompt, neighbours re-retrieved at every chunk",
}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode


def model_for_mode(models: Mapping[str, GPT | RetroModel], mode: str) -> GPT | RetroModel:
    """``models`` maps "gpt" / "retro" to a model; the gpt mode needs a GPT, the other modes a RetroModel."""
    check_mode(mode)
    key = "gpt" if mode == "gpt" else "retro"
    model = models.get(key)
    if model is None:
        raise ValueError(f"mode {mode!r} needs a {'GPT' if key == 'gpt' else 'Retro'} model; none was given")
    want = GPT if key == "gpt" else RetroModel
    if not isinstance(model, want):
        raise TypeError(f"mode {mode!r}: expected a {want.__name__}, got {type(model).__name__}")
    return model


def default_mode(model: GPT | RetroModel, retrieval: bool = True) -> str:
    if isinstance(model, RetroModel):
        return "retro" if retrieval else "retro-decoder"
    return "gpt"


def resolve_gate(model: GPT | RetroModel, retro_gate: float | None) -> float | None:
    """The gate a Retro model is evaluated with: ``retro_gate`` if given, else the saved gate, except that a saved
    gate of 0 (InstructRetro's instruction tuning switches the retrieval path off) is restored to 1."""
    if not isinstance(model, RetroModel):
        return None
    if retro_gate is not None:
        return float(retro_gate)
    saved = float(model.gate)
    return saved if saved != 0.0 else 1.0


@contextmanager
def gate_for_eval(model: GPT | RetroModel, retro_gate: float | None) -> Iterator[float | None]:
    """Sets the evaluation gate (:func:`resolve_gate`) for the ``with`` block, then restores the saved one."""
    g = resolve_gate(model, retro_gate)
    if g is None:
        yield None
        return
    saved = float(model.gate)
    if g != saved:
        model.set_gate(g)
    try:
        yield g
    finally:
        if g != saved:
            model.set_gate(saved)


def device_of(model) -> object:
    return next(model.parameters()).device
