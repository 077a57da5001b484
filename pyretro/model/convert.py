"""Import Hugging Face GPT-2 and Llama-family (Llama, Mistral) decoders as a pyretro ``GPT``.

Accepts a ``transformers`` model, or a state dict plus its config (a ``transformers`` config object or
its ``to_dict()``), so checkpoints can be converted without instantiating the HF model. Retro-fit the
result with :meth:`pyretro.model.RetroModel.from_gpt`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyretro.errors import ConfigError, MismatchError
from pyretro.model.config import GPTConfig
from pyretro.model.gpt import GPT

LLAMA_FAMILY = ("llama", "mistral")


def _cfg_dict(config: Any) -> dict[str, Any]:
    return config if isinstance(config, dict) else config.to_dict()


def gpt_config_from_hf(config: Any) -> GPTConfig:
    """A :class:`GPTConfig` equivalent to a HF ``GPT2Config`` / ``LlamaConfig`` / ``MistralConfig``."""
    c = _cfg_dict(config)
    kind = c.get("model_type")
    if kind == "gpt2":
        act = c.get("activation_function", "gelu_new")
        mlp = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(act)
        if mlp is None:
            raise ConfigError(f"gpt2 activation_function {act!r} is not supported")
        if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn"):
            raise ConfigError("gpt2: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
        n = c["n_embd"]
        return GPTConfig(
            vocab_size=c["vocab_size"], d_model=n, n_layers=c["n_layer"], n_heads=c["n_head"],
            d_ff=c.get("n_inner") or 4 * n, mlp=mlp, norm="layernorm", norm_eps=c.get("layer_norm_epsilon", 1e-5),
            position="learned", max_seq_len=c["n_positions"], tie_embeddings=True, bias=True,
        )
    if kind in LLAMA_FAMILY:
        if c.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{kind}: hidden_act {c.get('hidden_act')!r} is not supported (silu only)")
        if c.get("attention_bias") or c.get("mlp_bias"):
            raise ConfigError(f"{kind}: attention_bias / mlp_bias are not supported")
        rope = c.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default" or c.get("rope_scaling"):
            raise ConfigError(f"{kind}: scaled rotary ({rope.get('rope_type') or c.get('rope_scaling')}) is not supported")
        theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
        heads = c["num_attention_heads"]
        return GPTConfig(
            vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layers=c["num_hidden_layers"], n_heads=heads,
            n_kv_heads=c.get("num_key_value_heads") or heads, head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            d_ff=c["intermediate_size"], mlp="swiglu", norm="rmsnorm", norm_eps=c.get("rms_norm_eps", 1e-6),
            position="rope", rotary_theta=float(theta), rotary_fraction=float(c.get("partial_rotary_factor", 1.0)),
            max_seq_len=c.get("max_position_embeddings", 2048), tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        )
    raise ConfigError(f"model_type {kind!r} is not supported (gpt2, {', '.join(LLAMA_FAMILY)})")


def _gpt2_state(sd: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    p = "transformer." if any(k.startswith("transformer.") for k in sd) else ""
    out = {"tok_emb.weight": sd[f"{p}wte.weight"], "pos_emb.weight": sd[f"{p}wpe.weight"],
           "norm_f.weight": sd[f"{p}ln_f.weight"], "norm_f.bias": sd[f"{p}ln_f.bias"]}
    for i in range(cfg.n_layers):
        h, b = f"{p}h.{i}.", f"blocks.{i}."
        pairs = {"ln_1": "norm1", "ln_2": "norm2"}
        for src, dst in pairs.items():
            out[f"{b}{dst}.weight"], out[f"{b}{dst}.bias"] = sd[f"{h}{src}.weight"], sd[f"{h}{src}.bias"]
        conv1d = {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.o", "mlp.c_fc": "mlp.up", "mlp.c_proj": "mlp.down"}
        for src, dst in conv1d.items():  # GPT-2's Conv1D stores weights as [in, out]
            out[f"{b}{dst}.weight"] = sd[f"{h}{src}.weight"].t()
            out[f"{b}{dst}.bias"] = sd[f"{h}{src}.bias"]
    return out


def _llama_state(sd: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    p = "model." if any(k.startswith("model.") for k in sd) else ""
    out = {"tok_emb.weight": sd[f"{p}embed_tokens.weight"], "norm_f.weight": sd[f"{p}norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layers):
        h, b = f"{p}layers.{i}.", f"blocks.{i}."
        a = f"{h}self_attn."
        out[f"{b}attn.qkv.weight"] = torch.cat([sd[f"{a}q_proj.weight"], sd[f"{a}k_proj.weight"], sd[f"{a}v_proj.weight"]])
        out[f"{b}attn.o.weight"] = sd[f"{a}o_proj.weight"]
        out[f"{b}mlp.gate.weight"] = sd[f"{h}mlp.gate_proj.weight"]
        out[f"{b}mlp.up.weight"] = sd[f"{h}mlp.up_proj.weight"]
        out[f"{b}mlp.down.weight"] = sd[f"{h}mlp.down_proj.weight"]
        out[f"{b}norm1.weight"] = sd[f"{h}input_layernorm.weight"]
        out[f"{b}norm2.weight"] = sd[f"{h}post_attention_layernorm.weight"]
    return out


def from_hf(model_or_state_dict: Any, config: Any = None) -> GPT:
    """A pyretro ``GPT`` with the weights of a HF GPT-2 / Llama-family causal LM (model, or state dict + config)."""
    if isinstance(model_or_state_dict, dict):
        if config is None:
            raise ValueError("from_hf: a state dict needs its HF config (config=...)")
        sd = model_or_state_dict
    else:
        sd = model_or_state_dict.state_dict()
        config = config if config is not None else model_or_state_dict.config
    cfg = gpt_config_from_hf(config)
    try:
        mapped = _gpt2_state(sd, cfg) if _cfg_dict(config)["model_type"] == "gpt2" else _llama_state(sd, cfg)
    except KeyError as e:
        raise MismatchError(f"from_hf: the state dict lacks {e.args[0]!r} expected for a "
                            f"{_cfg_dict(config)['model_type']} model of {cfg.n_layers} layers") from None
    gpt = GPT(cfg)
    ref = next(iter(mapped.values()))
    gpt.to(dtype=ref.dtype)
    from pyretro.model.io import load_state_checked

    load_state_checked(gpt, mapped, source="HF state dict")
    return gpt
