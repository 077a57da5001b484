"""Training loop: learning, loss weighting, grad accumulation, retro-fitting, SFT, activation checkpointing,
NaN stop, bad input (tiny models on in-test datasets that follow the batch contract)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _train_fixtures import VOCAB, PatternDataset, one_thread, tiny_config  # noqa: F401 (autouse fixture)

from pyretro.errors import ConfigError, MismatchError
from pyretro.model import GPT, RetroModel, lm_loss
from pyretro.model.io import load
from pyretro.train.checkpoint import latest_checkpoint
from pyretro.train.config import ModelSection
from pyretro.train.data import ResumableSampler
from pyretro.train.loop import NonFiniteLossError, token_loss_sum, train
from pyretro.train.models import build_model
from pyretro.train.sft import sft


def _params(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_token_loss_sum_matches_lm_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    tokens = torch.randint(0, 11, (3, 7), generator=g)
    mask = torch.rand(3, 7, generator=g) > 0.4
    s, n = token_loss_sum(logits, tokens, mask)
    assert int(n) == int(mask[:, 1:].sum())
    torch.testing.assert_close(s / n, lm_loss(logits, tokens, mask))
    s, n = token_loss_sum(logits, tokens, None)
    torch.testing.assert_close(s / n, lm_loss(logits, tokens))


def test_validation_counts_every_sample_of_a_single_process():
    """evaluate(max_batches=0) is documented as the whole set: a short last batch must not be dropped."""
    from pyretro.train.loop import evaluate

    torch.manual_seed(0)
    model = build_model(tiny_config("unused", "gpt").model)
    data = PatternDataset(5, half_mask=True)
    res = evaluate(model, data, retro=False, batch_size=2)
    assert res["tokens"] == 5 * int(data.mask[0, 1:].sum())
    with torch.no_grad():
        s, n = token_loss_sum(model.eval()(data.tokens), data.tokens, data.mask)
    assert res["loss"] == pytest.approx(float(s / n), rel=1e-5)


@pytest.mark.parametrize("kind", ["gpt", "retro"])
def test_learns_and_first_loss_is_the_masked_batch_loss(tmp_path, kind):
    """Step 1's loss = lm_loss of the initial model on the sampler's first global batch (answer-style mask)."""
    cfg = tiny_config(tmp_path / kind, kind, train__steps=8)
    data = PatternDataset(48, half_mask=True)
    model = build_model(cfg.model)
    model0 = copy.deepcopy(model)
    res = train(cfg, model=model, train_data=data)
    assert sorted(res.losses) == list(range(1, 9)) and res.step == 8
    idx = ResumableSampler(len(data), cfg.train.batch_size, seed=cfg.train.seed).order(0)[: cfg.train.batch_size]
    b = {k: torch.stack([data[int(i)][k] for i in idx]) for k in ("tokens", "loss_mask", "neighbors", "neighbor_mask")}
    with torch.no_grad():
        logits = model0(b["tokens"]) if kind == "gpt" else model0(b["tokens"], b["neighbors"], b["neighbor_mask"])
    assert res.losses[1] == pytest.approx(float(lm_loss(logits, b["tokens"], b["loss_mask"])), rel=1e-5)
    assert res.losses[8] < res.losses[1] - 0.25  # counting sequences are learnable
    assert res.model is model and res.checkpoint is not None and res.checkpoint.name == "step_00000008"


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    data = PatternDataset(32, half_mask=True)
    runs = []
    for accum in (1, 2):
        cfg = tiny_config(tmp_path / f"a{accum}", "retro", train__steps=3, optim__grad_accum=accum)
        torch.manual_seed(0)
        runs.append(train(cfg, model=build_model(cfg.model), train_data=data))
    np.testing.assert_allclose([runs[0].losses[s] for s in (1, 2, 3)], [runs[1].losses[s] for s in (1, 2, 3)],
                               rtol=1e-5)
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_activation_checkpointing_same_training(tmp_path):
    data = PatternDataset(32)
    runs = []
    for ac in (False, True):
        cfg = tiny_config(tmp_path / str(ac), "retro", train__steps=3, train__activation_checkpointing=ac)
        torch.manual_seed(1)
        runs.append(train(cfg, model=build_model(cfg.model), train_data=data))
    np.testing.assert_allclose(list(runs[0].losses.values()), list(runs[1].losses.values()), rtol=1e-6)
    wrapped = [m for m in runs[1].model.modules() if type(m).__name__ == "CheckpointWrapper"]
    assert len(wrapped) == 2 * 2 + 1 + 1  # attn + mlp per block, the encoder, one CCA block
    saved = load(runs[1].checkpoint / "model.safetensors")  # keys free of wrapper prefixes
    for k, v in saved.state_dict().items():
        torch.testing.assert_close(v, runs[1].model.state_dict()[k])


def test_retrofit_from_gpt_checkpoint(tmp_path):
    gcfg = tiny_config(tmp_path / "gpt", "gpt", train__steps=2)
    gres = train(gcfg, train_data=PatternDataset(16))
    gpt: GPT = gres.model
    same_kind = build_model(ModelSection(init_from=str(gres.run_dir)))  # kind None: the saved model's kind
    assert type(same_kind) is GPT and torch.equal(same_kind.tok_emb.weight, gpt.tok_emb.weight)
    data = PatternDataset(16, seed=3)
    b = data[0]
    for freeze in (True, False):
        cfg = tiny_config(tmp_path / f"retro{freeze}", "retro", train__steps=2, model__init_from=gres.run_dir,
                          model__freeze_decoder=freeze, model__gpt__d_model=48)  # gpt sizes come from the file
        model = build_model(cfg.model)
        assert isinstance(model, RetroModel) and model.config.d_model == 32
        with torch.no_grad():  # retro-fitted == the GPT until trained (CCA output starts at zero)
            torch.testing.assert_close(model(b["tokens"][None], b["neighbors"][None]), gpt(b["tokens"][None]))
        dec0, enc0 = _params(model, "decoder."), _params(model, "encoder.")
        res = train(cfg, model=model, train_data=data)
        assert _changed(enc0, _params(res.model, "encoder."))
        assert _changed(dec0, _params(res.model, "decoder.")) == (not freeze)
        assert res.val == {} and res.step == 2
        saved = __import__("json").loads((res.run_dir / "config.json").read_text())
        assert saved["model"]["gpt"]["d_model"] == 32  # the config records the architecture trained


@pytest.mark.parametrize("retrieval_on", [False, True])
def test_sft_gate_off_or_retrieval_on(tmp_path, retrieval_on):
    cfg = tiny_config(tmp_path, "retro", train__steps=2, sft__retrieval_on=retrieval_on)
    model = build_model(cfg.model)
    model.cca[0].o.weight.data.normal_(0, 0.02)  # a "trained" CCA, so the gate matters
    enc0, dec0 = _params(model, "encoder."), _params(model, "decoder.")
    res = sft(cfg, model=model, train_data=PatternDataset(16, half_mask=True),
              val_data={"qa": PatternDataset(8, seed=5, half_mask=True)})
    assert float(res.model.gate) == (1.0 if retrieval_on else 0.0)
    assert _changed(enc0, _params(res.model, "encoder.")) == retrieval_on  # gated-off encoder is frozen
    assert _changed(dec0, _params(res.model, "decoder."))
    assert ("val/qa/no_retrieval/loss" in res.val) == retrieval_on and res.val["val/qa/ppl"] > 1


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, "gpt", train__steps=6, train__ckpt_interval=2)

    def poison(step, metrics):
        if step == 3:
            with torch.no_grad():
                next(iter(res_model.parameters())).fill_(float("nan"))

    res_model = build_model(cfg.model)
    with pytest.raises(NonFiniteLossError, match=r"step 4: the training loss is nan.*step_00000002"):
        train(cfg, model=res_model, train_data=PatternDataset(16), on_step=poison)
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    assert all(torch.isfinite(p).all() for p in load(latest_checkpoint(tmp_path) / "model.safetensors").parameters())


class _Empty(PatternDataset):
    def __len__(self) -> int:
        return 0


def test_bad_input_is_reported_before_training(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        train(tiny_config(tmp_path / "a"), train_data=_Empty(4))
    big = PatternDataset(8)
    big.tokens[3, 5] = VOCAB + 10
    big.tokens[0, 2] = VOCAB + 10
    with pytest.raises(MismatchError, match="vocab_size 64"):
        train(tiny_config(tmp_path / "b", "gpt"), train_data=big)
    with pytest.raises(ConfigError, match="chunk_len"):  # 18-token samples for a chunk_len-4 Retro model
        train(tiny_config(tmp_path / "c"), train_data=_Seq18(8))
    with pytest.raises(ConfigError, match="data.seq_len=18 is not a multiple"):
        train(tiny_config(tmp_path / "c2", data__seq_len=18), train_data=_Seq18(8))
    # gated-off instruction tuning runs the decoder alone: any length is fine
    assert sft(tiny_config(tmp_path / "c3", train__steps=1, data__seq_len=18), train_data=_Seq18(8)).step == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="train.out_dir.*not writable"):
        train(tiny_config(blocker / "run"), train_data=PatternDataset(8))
    with pytest.raises(ConfigError, match="divisible"):
        train(tiny_config(tmp_path / "d", optim__grad_accum=3), train_data=PatternDataset(8))
    with pytest.raises(ConfigError, match="bf16 autocast is used on CUDA only"):
        train(tiny_config(tmp_path / "e", train__dtype="bfloat16", train__device="cpu"), train_data=PatternDataset(8))
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        train(tiny_config(tmp_path / "f", train__batch_size=8), train_data=PatternDataset(6))
    with pytest.raises(ConfigError, match="data.train"):
        train(tiny_config(tmp_path / "g"))  # no data at all
    with pytest.raises(ConfigError, match="needs neighbours"):
        train(tiny_config(tmp_path / "h"), train_data=_NoNeighbors(8))
    # neighbours of half-size chunks: the model would silently read them against the wrong chunks
    fine = PatternDataset(8)
    fine.neighbors = fine.neighbors.repeat_interleave(2, dim=1)
    with pytest.raises(MismatchError, match="chunk_len"):
        train(tiny_config(tmp_path / "i"), train_data=fine)
    fine = PatternDataset(8)
    fine.chunk_len = 2  # a dataset that says so (RetroDataset of a store with another chunk_len)
    with pytest.raises(MismatchError, match="the data's chunk_len 2"):
        train(tiny_config(tmp_path / "j"), train_data=fine)
    assert not (tmp_path / "a" / "checkpoints").exists()


class _Seq18(PatternDataset):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.tokens = torch.cat([self.tokens, self.tokens[:, :2]], 1)
        self.mask = torch.ones_like(self.tokens, dtype=torch.bool)


def test_tensorboard_needs_its_package(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            train(tiny_config(tmp_path, "gpt", train__steps=1, train__tensorboard=True), train_data=PatternDataset(8))
    else:
        train(tiny_config(tmp_path, "gpt", train__steps=1, train__tensorboard=True), train_data=PatternDataset(8))
        assert any((tmp_path / "tensorboard").iterdir())


class _NoNeighbors(PatternDataset):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i], "loss_mask": self.mask[i]}


@pytest.mark.slow  # dynamo tracing: ~5-20 s on a shared 2-core CPU
def test_compile_option_same_losses(tmp_path):
    """torch.compile wiring (the eager backend: dynamo tracing without codegen, fast on a CPU)."""
    data = PatternDataset(16)
    runs = []
    for comp in (False, True):
        cfg = tiny_config(tmp_path / str(comp), "gpt", train__steps=2, train__compile=comp,
                          train__compile_backend="eager")
        torch.manual_seed(2)
        runs.append(train(cfg, model=build_model(cfg.model), train_data=data, val_data=PatternDataset(4)))
    np.testing.assert_allclose(list(runs[0].losses.values()), list(runs[1].losses.values()), rtol=1e-6)
    assert runs[1].val["val/val/loss"] == pytest.approx(runs[0].val["val/val/loss"], rel=1e-6)
