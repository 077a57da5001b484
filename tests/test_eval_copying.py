import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pyretro.eval import copy_probe
from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel

V = 97


class _Copier(nn.Module):
    """Uniform logits, plus (``period`` set) a large score on the token ``period`` positions back."""

    def __init__(self, period: int | None) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=V, max_seq_len=256)
        self.period = period
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*x.shape, V) + self.w
        if self.period:
            p = self.period
            # position t predicts x[t+1] = x[t+1-p] once the sequence repeats
            logits[:, p - 1:].scatter_(2, x[:, : x.shape[1] - p + 1, None], 60.0)
        return logits


def test_perfect_copier_and_no_copier():
    perfect = copy_probe(_Copier(period=20), length=20, batch=4)
    assert perfect.first_nll == pytest.approx(math.log(V), rel=1e-5)
    assert perfect.second_nll < 1e-6 and perfect.gain == pytest.approx(math.log(V), rel=1e-5)
    none = copy_probe(_Copier(period=None), length=20, batch=4)
    assert none.first_nll == pytest.approx(none.second_nll) and abs(none.gain) < 1e-6
    # a copier keyed to the wrong period does not count as copying
    wrong = copy_probe(_Copier(period=7), length=20, batch=4, low=10)
    assert wrong.second_nll > 1.0


def test_retro_runs_its_decoder_and_matches_its_gpt_at_init():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=V, d_model=32, n_layers=4, n_heads=4, max_seq_len=64)).train()
    retro = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=8, cca_layers=(2, 4), encoder_d_model=16,
                                                 encoder_heads=2))
    a, b = copy_probe(gpt, length=24, batch=3, low=5), copy_probe(retro, length=24, batch=3, low=5)
    assert a.first_nll == pytest.approx(b.first_nll) and a.second_nll == pytest.approx(b.second_nll)
    assert math.isfinite(a.first_nll) and a.first_nll > 0
    assert gpt.training  # the probe restores the mode it found


@pytest.mark.parametrize("kw, match", [(dict(low=5, high=5), "token range"), (dict(high=V + 1), "token range"),
                                       (dict(low=-1), "token range"), (dict(length=1), "length"),
                                       (dict(length=40), "max_seq_len")])
def test_bad_arguments(kw, match):
    gpt = GPT(GPTConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, max_seq_len=64))
    with pytest.raises(ValueError, match=match):
        copy_probe(gpt, **kw)
