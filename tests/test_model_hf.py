"""Hugging Face import: a tiny random GPT-2 / Llama built from a config must give the same logits."""

from __future__ import annotations

import pytest
import torch

from pyretro.errors import ConfigError, MismatchError
from pyretro.model import RetroConfig, RetroModel

transformers = pytest.importorskip("transformers")
from pyretro.model.convert import from_hf, gpt_config_from_hf  # noqa: E402


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=101, n_embd=48, n_layer=3, n_head=4, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _llama(tied=False, **kw):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                   num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                                   rope_theta=500.0, tie_word_embeddings=tied, initializer_range=0.2,
                                   bos_token_id=0, eos_token_id=0, **kw)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("make", [_gpt2, _llama, lambda: _llama(tied=True)], ids=["gpt2", "llama", "llama-tied"])
def test_hf_import_reproduces_logits(make):
    hf = make()
    tokens = torch.randint(0, 101, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
        ours = from_hf(hf).eval()(tokens)
        # the state dict + config route gives the same model
        ours2 = from_hf(hf.state_dict(), hf.config.to_dict()).eval()(tokens)
    assert ref.abs().amax() > 1.0  # logits far from trivial
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours2, ours, rtol=0, atol=0)


def test_hf_llama_retrofit_equals_hf():
    hf = _llama()
    gpt = from_hf(hf)
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=8, cca_layers=(2, 3))).eval()
    tokens = torch.randint(0, 101, (1, 33))
    nb = torch.randint(0, 101, (1, 5, 2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, nb), hf(tokens).logits, rtol=1e-4, atol=1e-4)


def test_hf_import_errors():
    hf = _llama()
    cfg = hf.config.to_dict()
    sd = dict(hf.state_dict())
    del sd["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(MismatchError, match="up_proj"):
        from_hf(sd, cfg)
    with pytest.raises(ValueError, match="config"):
        from_hf(hf.state_dict())
    with pytest.raises(ConfigError, match="model_type"):
        gpt_config_from_hf({"model_type": "bert"})
    with pytest.raises(ConfigError, match="scaled rotary"):
        gpt_config_from_hf({**cfg, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}})
