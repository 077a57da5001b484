"""Model benchmarks: training step (forward + backward + AdamW step) of RetroModel vs GPT with the same
decoder, fused ``pyretro.ops`` vs their plain-PyTorch references, and generation with / without the KV cache.

Retro variants: the default config (encoder width = d_model, full-head CCA, as Megatron-LM), grouped-query
CCA (``cca_kv_heads``), a narrow encoder (``encoder_d_model``, RETRO's 896-wide encoder under wider
decoders), and both together. ``flops_x`` is the matmul-FLOP ratio of the step, which bounds what any
implementation can reach.

Rows follow ``pyretro.benchmarks`` (``ratio`` = baseline_ms / time_ms, > 1 = faster than the baseline);
``cost_x`` = time_ms / baseline_ms is the slowdown factor the Retro goal is stated in (<= 1.15x a GPT step).
With ``compile=1`` each model is also timed ``torch.compile``'d (fused ops), every compiled Retro against the
compiled GPT.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from pyretro.benchmarks._params import resolve
from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel, lm_loss, ops_backend
from pyretro.model.generate import generate

DEFAULTS: dict[str, Any] = {
    "layers": 12,
    "d_model": 512,
    "heads": 8,
    "vocab": 8192,
    "seq": 1024,
    "batch": 1,
    "chunk_len": 64,
    "k": 2,
    "reps": 5,
    # RETRO used a 896-wide encoder under decoders up to 4096 wide; this is the same ratio class.
    "narrow_encoder": 128,
    "cca_kv_heads": 2,  # grouped-query CCA variant (0 = skip it)
    "optimizer": 1,  # 1: the step includes AdamW's update (fwd+bwd+optimizer); 0: forward + backward only
    # 1: also time torch.compile'd (inductor) steps of the GPT and of each Retro variant, fused ops (adds minutes
    # of compilation); their cost is relative to the compiled GPT
    "compile": 0,
    "compile_backend": "inductor",
    "generation": 1,  # 0 skips the generation rows
    "gen_prompt": 64,
    "gen_new": 32,
    "gen_batch": 4,
    "seed": 0,
}
QUICK = {"layers": 6, "d_model": 256, "heads": 4, "seq": 512, "reps": 2, "gen_new": 16, "vocab": 4096}


def _median_ms(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _train_step(model: torch.nn.Module, tokens: torch.Tensor, neighbors: torch.Tensor | None = None,
                optimizer: bool = False):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5) if optimizer else None

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(tokens) if neighbors is None else model(tokens, neighbors)
        lm_loss(logits, tokens).backward()
        if opt is not None:
            opt.step()
    return step


def _step_flops(model: torch.nn.Module, tokens: torch.Tensor, neighbors: torch.Tensor | None = None) -> float:
    """Matmul FLOPs of one forward+backward (torch's FlopCounterMode; the reference CCA is plain matmuls).

    Load-independent, unlike the timings on a shared machine. SDPA self-attention is not counted (the
    counter has no CPU formula for it); it is the same in both models apart from the small encoder.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with ops_backend(False), FlopCounterMode(display=False) as fc:
        _train_step(model, tokens, neighbors)()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def run(device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    p = resolve(DEFAULTS, QUICK, quick, overrides)
    torch.manual_seed(p["seed"])
    dev = torch.device(device)
    m, k, N, B = p["chunk_len"], p["k"], p["seq"], p["batch"]
    cfg = GPTConfig(vocab_size=p["vocab"], d_model=p["d_model"], n_layers=p["layers"], n_heads=p["heads"],
                    rotary_fraction=0.5, max_seq_len=max(N, 2048))
    gpt = GPT(cfg).to(dev).train()
    tokens = torch.randint(0, p["vocab"], (B, N), device=dev)
    neighbors = torch.randint(0, p["vocab"], (B, N // m, k, 2 * m), device=dev)
    opt = bool(p["optimizer"])
    shape = dict(B=B, N=N, layers=p["layers"], d=p["d_model"], m=m, k=k, r=2 * m, optimizer="adamw" if opt else None)
    rows: list[dict] = []
    step_tokens = B * N
    what = "train step" if opt else "fwd+bwd"

    # Every variant runs once per round, in turn, so load drifts on a shared machine hit all of them alike;
    # each ratio is the median of per-round ratios.
    steps: dict[str, Any] = {"gpt": _train_step(gpt, tokens, optimizer=opt)}
    gpt_flops = _step_flops(gpt, tokens)
    info: dict[str, dict] = {"gpt": shape}
    variants: list[tuple[str, dict]] = [("default: encoder width = d_model, full-head CCA", {})]
    if p["cca_kv_heads"]:
        variants.append((f"grouped-query CCA, {p['cca_kv_heads']} kv heads", dict(cca_kv_heads=p["cca_kv_heads"])))
    if p["narrow_encoder"]:
        w = p["narrow_encoder"]
        narrow = dict(encoder_d_model=w, encoder_heads=max(1, w // 64))
        variants.append((f"encoder width {w}", narrow))
        if p["cca_kv_heads"]:  # both: the cheapest Retro of the same function class (docs/model.md)
            variants.append((f"encoder width {w} + grouped-query CCA, {p['cca_kv_heads']} kv heads",
                             dict(narrow, cca_kv_heads=p["cca_kv_heads"])))
    for vi, (label, extra) in enumerate(variants):
        retro = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=m, num_neighbors=k, **extra))
        retro.train()
        sh = {**shape, "cca_layers": "/".join(str(x) for x in retro.cca_layers), "enc_d": retro.encoder.d_model,
              "cca_kv_heads": retro.cca[0].n_kv_heads}
        info[f"flops {label}"] = {"flops_x": _step_flops(retro, tokens, neighbors) / gpt_flops}
        for fused in ((True, False) if vi == 0 else (True,)):  # fused vs reference: once is enough
            step = _train_step(retro, tokens, neighbors, optimizer=opt)

            def run_step(step=step, fused=fused):
                with ops_backend(fused):
                    step()
            name = f"retro ({label}), {'fused' if fused else 'reference'} ops"
            steps[name], info[name] = run_step, sh
        if p["compile"]:
            step = _train_step(torch.compile(retro, backend=p["compile_backend"]), tokens, neighbors, optimizer=opt)

            def run_compiled(step=step):
                with ops_backend(True):  # as labelled, whatever the caller's setting
                    step()
            name = f"retro ({label}), fused ops, compiled"
            steps[name], info[name] = run_compiled, sh
    if p["compile"]:
        steps["gpt, compiled"] = _train_step(torch.compile(gpt, backend=p["compile_backend"]), tokens, optimizer=opt)
    for fn in steps.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(p["reps"]):
        for n, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[n].append((time.perf_counter() - t0) * 1e3)
    med = {n: statistics.median(t) for n, t in times.items()}

    def rel(a: str, b: str) -> float:  # median over rounds of time(a) / time(b)
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    rows.append(dict(name=f"gpt {what}", shape=shape, time_ms=med["gpt"], tok_s=step_tokens / med["gpt"] * 1e3,
                     baseline=None, baseline_ms=None, ratio=None))
    if "gpt, compiled" in steps:
        c = rel("gpt, compiled", "gpt")
        rows.append(dict(name=f"gpt {what}, compiled", shape=shape, time_ms=med["gpt, compiled"],
                         tok_s=step_tokens / med["gpt, compiled"] * 1e3, baseline=f"gpt {what}",
                         baseline_ms=med["gpt"], ratio=1 / c, cost_x=c))
    for n in steps:
        if n.startswith("gpt"):
            continue
        base = "gpt, compiled" if n.endswith("compiled") else "gpt"  # compiled Retro vs compiled GPT
        c = rel(n, base)
        label = n[n.index("(") + 1: n.rindex(")")]
        rows.append(dict(name=n.replace("retro", f"retro {what}"), shape=info[n], time_ms=med[n],
                         tok_s=step_tokens / med[n] * 1e3, baseline=base.replace("gpt", f"gpt {what}"),
                         baseline_ms=med[base], ratio=1 / c, cost_x=c, **info[f"flops {label}"]))
        if n.endswith("fused ops") and n.replace("fused", "reference") in times:
            ref = n.replace("fused", "reference")
            c = rel(n, ref)
            rows.append(dict(name=n.replace("retro", f"retro {what}") + " vs reference ops", shape=info[n],
                             time_ms=med[n], baseline=ref, baseline_ms=med[ref], ratio=1 / c, cost_x=c))

    if not p["generation"]:
        return rows
    # Generation: batch of prompts, Retro re-retrieving every completed chunk via a cheap fake retriever.
    gpt.eval()
    retro = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=m, num_neighbors=k)).eval()
    g = torch.Generator().manual_seed(p["seed"])
    prompts = torch.randint(0, p["vocab"], (p["gen_batch"], p["gen_prompt"]), generator=g).tolist()
    new = p["gen_new"]

    def retriever(chunk_tokens):
        s = chunk_tokens.sum(1, keepdim=True)
        return (s[:, :, None] + torch.arange(k)[None, :, None] * 7 + torch.arange(2 * m)[None, None]) % p["vocab"]

    gsh = dict(B=p["gen_batch"], prompt=p["gen_prompt"], new=new, layers=p["layers"], d=p["d_model"])
    for label, net, kw in (("gpt", gpt, {}), ("retro (re-retrieval)", retro, dict(retriever=retriever))):
        reps = max(1, p["reps"] // 2)
        nocache = _median_ms(lambda net=net, kw=kw: generate(net, prompts, max_new_tokens=new, use_cache=False, **kw),
                             reps, warmup=0)
        cached = _median_ms(lambda net=net, kw=kw: generate(net, prompts, max_new_tokens=new, **kw), reps)
        n_tok = p["gen_batch"] * new
        rows.append(dict(name=f"generate {label}, no cache", shape=gsh, time_ms=nocache,
                         tok_s=n_tok / nocache * 1e3, baseline=None, baseline_ms=None, ratio=None))
        rows.append(dict(name=f"generate {label}, KV cache", shape=gsh, time_ms=cached, tok_s=n_tok / cached * 1e3,
                         baseline="no cache", baseline_ms=nocache, ratio=nocache / cached))
    return rows
