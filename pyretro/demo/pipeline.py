"""``pyretro demo``: the whole Retro / InstructRetro pipeline on the synthetic-knowledge corpus, end to end.

Stages (each skipped on a rerun when it finished with the same settings; see stages.py):
corpus -> ingest [-> practice] -> retrieval -> qa_data -> pretrain_gpt [-> bursty_gpt] -> continue_gpt |
retrofit_retro -> sft_gpt | sft_retro -> eval_ppl -> eval_qa -> examples -> report (bracketed: only with
practice people / bursty steps). Output layout under ``out``: ``corpus/`` (JSONL), ``db/`` (tokenizer,
stores, embeddings, index, neighbour tables), ``runs/<phase>/`` (training runs: metrics.jsonl, loss.png,
checkpoints), ``models/*.safetensors``, ``eval/`` (pyretro.eval reports), ``report.md``, ``report.png``,
``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from pyretro.demo.config import DemoConfig
from pyretro.demo.stages import StageRunner

# the settings each stage's output depends on, beyond those of the stages it reads (see _stage_key)
_FIELDS = {
    "corpus": ("num_entities", "docs_per_entity", "heldout_fraction", "full_name_share", "shared_lead", "reading_docs",
               "reading_questions", "seed"),
    "ingest": ("vocab_size", "chunk_len"),
    "retrieval": ("embed_dim", "seq_len", "k_saved"),
    "qa_data": ("qa_passages", "qa_passage_kind", "qa_eval", "neighbor_len", "sft_entities"),
    "pretrain_gpt": ("d_model", "n_layers", "n_heads", "batch_size", "pretrain_steps", "pretrain_lr", "warmup_steps",
                     "eval_interval", "eval_batches"),
    "practice": ("practice_people",),
    "bursty_gpt": ("bursty_steps", "bursty_seq_len"),
    "continue_gpt": ("continue_steps", "continue_lr", "continue_warmup_steps"),
    "retrofit_retro": ("encoder_layers", "encoder_d_model", "cca_layers", "cca_rotary", "cca_qk_norm", "k_train", "neighbor_len",
                       "retrieval_lr_scale", "cca_position_bias"),
    "sft_gpt": ("sft_steps", "sft_lr", "sft_batch_size", "sft_seq_len", "sft_data", "practice_seq_len"),
    "sft_retro": ("sft_steps", "sft_lr", "sft_batch_size", "sft_seq_len", "sft_data", "practice_seq_len"),
    "eval_ppl": ("k_eval",),
    "eval_qa": ("qa_max_new_tokens",),
    "examples": ("examples",),
}
_INPUTS = {
    "corpus": (), "ingest": ("corpus",), "retrieval": ("ingest",), "qa_data": ("retrieval",),
    "practice": ("ingest",), "pretrain_gpt": ("retrieval",), "bursty_gpt": ("pretrain_gpt", "practice"),
    "continue_gpt": ("bursty_gpt",),
    "retrofit_retro": ("continue_gpt",),
    "sft_gpt": ("continue_gpt", "qa_data", "practice"), "sft_retro": ("retrofit_retro", "qa_data", "practice"),
    "eval_ppl": ("retrofit_retro",), "eval_qa": ("sft_gpt", "sft_retro"), "examples": ("eval_qa",),
}


# Output versions: bumped when a stage's output changes for the same settings (new code or formats). A stage's
# key covers its own version and those of the stages it reads, so rerunning an upgraded pyretro in an old output
# directory redoes what changed and everything after it, instead of mixing outputs of two versions (e.g. a
# database indexed with an earlier embedder, which the re-retrieval stage then cannot open).
_VERSIONS = {"corpus": 1, "ingest": 1, "practice": 1, "retrieval": 1, "qa_data": 1, "pretrain_gpt": 1,
             "bursty_gpt": 1, "continue_gpt": 1, "retrofit_retro": 1, "sft_gpt": 1, "sft_retro": 1, "eval_ppl": 2,
             "eval_qa": 1, "examples": 1}


def stage_versions(name: str) -> dict[str, int]:
    """The output versions stage ``name`` depends on: its own and, recursively, its inputs'."""
    out = {name: _VERSIONS[name]}
    for up in _INPUTS[name]:
        out.update(stage_versions(up))
    return out


def stage_fields(name: str) -> list[str]:
    """Every setting stage ``name`` depends on, directly or through its inputs."""
    seen: list[str] = []
    for up in _INPUTS[name]:
        seen += [f for f in stage_fields(up) if f not in seen]
    return seen + [f for f in _FIELDS[name] if f not in seen]


def _inert(cfg: DemoConfig) -> set[str]:
    """Settings that change nothing at their values in ``cfg``: left out of the keys, so adding a setting with
    such a default keeps earlier output directories valid."""
    inert = {"reading_docs", "reading_questions"} if cfg.reading_docs == 0 else set()
    if cfg.practice_people == 0:
        inert.add("practice_people")
    if cfg.bursty_steps == 0:
        inert |= {"bursty_steps", "bursty_seq_len"}
    if cfg.sft_data == "questions":
        inert |= {"sft_data", "practice_seq_len"}
    return inert


def _stage_key(cfg: DemoConfig):
    inert = _inert(cfg)

    def key(name: str) -> str:
        settings = cfg.key(*[f for f in stage_fields(name) if f not in inert])
        versions = json.dumps(stage_versions(name), sort_keys=True)
        return hashlib.sha1(f"{settings} {versions}".encode()).hexdigest()[:12]
    return key


def fresh_run_dir(run_dir: Path, key: str) -> None:
    """A training run directory for settings ``key``: a run of the same settings that was killed is kept (the
    loop resumes from its checkpoint); one made with other settings is removed, never resumed."""
    marker = run_dir / "demo_key"
    if run_dir.exists() and not (marker.is_file() and marker.read_text() == key):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_demo(cfg: DemoConfig, out: str | os.PathLike, *, progress: bool = True,
             threads: int | None = None) -> dict[str, Any]:
    """Runs (or resumes) the demo into ``out``; returns the metrics of every stage (also ``metrics.json``)."""
    from pyretro.data.synthetic import write_jsonl
    from pyretro.demo import database, evaluation, training
    from pyretro.demo.corpus import PRACTICE_SEED, demo_corpus, practice_people
    from pyretro.demo.qa_data import build_qa_files
    from pyretro.demo.report import markdown, plot, try_it
    from pyretro.train import DocumentDataset, RetroDataset

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"out: {out} is not writable")
    if threads:
        torch.set_num_threads(threads)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {cfg.device!r} requested but CUDA is not available")
    t_start = time.perf_counter()
    _write_json(out / "config.json", cfg.to_dict())
    corpus_dir, db, runs, models = out / "corpus", out / "db", out / "runs", out / "models"
    models.mkdir(exist_ok=True)
    st = StageRunner(out, _stage_key(cfg), progress)
    m: dict[str, Any] = {}

    def corpus() -> dict[str, Any]:
        c = demo_corpus(cfg.num_entities, cfg.docs_per_entity, cfg.seed, cfg.heldout_fraction, cfg.full_name_share,
                        cfg.shared_lead, cfg.reading_docs, cfg.reading_questions)
        c.write(corpus_dir)
        return {"entities": len(c.entities), "heldout_entities": sum(e.heldout for e in c.entities),
                "documents": {s: len(c.split(s)) for s in ("train", "retrieval", "eval")}, "qa": len(c.qa)}
    m["corpus"] = st.run("corpus", "generate the synthetic-knowledge corpus", corpus)
    m["ingest"] = st.run("ingest", "ingest: train a BPE, build the train / database / eval chunk stores",
                         lambda: database.build_stores(corpus_dir, db, cfg.vocab_size, cfg.chunk_len, progress))

    def practice() -> dict[str, Any]:
        names = {e["name"] for e in database.read_jsonl(corpus_dir / "entities.jsonl")}
        pairs, convs = practice_people(cfg.practice_people, PRACTICE_SEED + cfg.seed, cfg.shared_lead, names)
        write_jsonl(corpus_dir / "practice_pairs.jsonl", pairs)
        write_jsonl(corpus_dir / "practice_sft.jsonl", convs)
        return {"people": len(pairs), "store": database.build_practice_store(corpus_dir, db, cfg.chunk_len)}
    if cfg.practice_people:  # a stage of its own: adding practice people leaves the corpus and pretraining as they are
        m["practice"] = st.run("practice", f"practice people ({cfg.practice_people}): bursty pairs, conversations",
                               practice)
    m["retrieval"] = st.run("retrieval", "retrieval database: embed, index, neighbour tables",
                            lambda: database.build_retrieval(db, corpus_dir, cfg.embed_dim, cfg.seq_len, cfg.k_saved,
                                                             progress))

    def qa_data() -> dict[str, Any]:
        qa = database.read_jsonl(corpus_dir / "qa.jsonl")
        return build_qa_files(qa, database.open_retriever(db), out / "qa", passages=cfg.qa_passages,
                              r=cfg.r, n_eval=cfg.qa_eval, seed=cfg.seed, kind=cfg.qa_passage_kind,
                              sft_entities=cfg.sft_entities)
    m["qa_data"] = st.run("qa_data", "QA data: retrieve context passages for every question", qa_data)

    vocab = json.loads((db / "database" / "header.json").read_text())["vocab_size"]
    gpt_data = RetroDataset(db / "train", seq_len=cfg.seq_len)
    gpt_val = {"heldout": RetroDataset(db / "eval", seq_len=cfg.seq_len)}

    def retro_data():
        k = dict(seq_len=cfg.seq_len, db_store=db / "database", k=cfg.k_train, r=cfg.r)
        return (RetroDataset(db / "train", db / "nb_train", **k),
                {"heldout": RetroDataset(db / "eval", db / "nb_eval", **k)})

    def phase(name: str, model_fn, data, val, steps: int, lr: float, sft: bool = False, warmup: int | None = None,
              seq_len: int | None = None):
        def fn() -> dict[str, Any]:
            fresh_run_dir(runs / name, st.key(name))
            return training.run_phase(cfg, model_fn(), data() if callable(data) else data, val, runs / name,
                                      models / f"{name}.safetensors", steps=steps, lr=lr, progress=progress, sft=sft,
                                      warmup=warmup, seq_len=seq_len)
        return fn

    m["pretrain_gpt"] = st.run("pretrain_gpt", f"pretrain a GPT ({cfg.pretrain_steps} steps)",
                               phase("pretrain_gpt", lambda: training.new_gpt(cfg, vocab), gpt_data, gpt_val,
                                     cfg.pretrain_steps, cfg.pretrain_lr))
    pre = models / "pretrain_gpt.safetensors"
    if cfg.bursty_steps:
        # one pair per sample: the second document about a person is predictable only from the first
        bursty = lambda: DocumentDataset(db / "practice", seq_len=cfg.bursty_seq_len)  # noqa: E731
        m["bursty_gpt"] = st.run("bursty_gpt", f"bursty pairs: learn to copy from the context ({cfg.bursty_steps} "
                                 "steps)", phase("bursty_gpt", lambda: training.load(pre), bursty, gpt_val,
                                                 cfg.bursty_steps, cfg.continue_lr, warmup=cfg.warmup_steps,
                                                 seq_len=cfg.bursty_seq_len))
        pre = models / "bursty_gpt.safetensors"
    m["continue_gpt"] = st.run("continue_gpt", f"continue the GPT ({cfg.continue_steps} steps, the baseline)",
                               phase("continue_gpt", lambda: training.load(pre), gpt_data, gpt_val,
                                     cfg.continue_steps, cfg.continue_lr, warmup=cfg.continue_warmup_steps))
    rdata, rval = retro_data()
    m["retrofit_retro"] = st.run("retrofit_retro", f"retro-fit a Retro from it ({cfg.continue_steps} steps)",
                                 phase("retrofit_retro", lambda: training.retrofit(pre, cfg), rdata, rval,
                                       cfg.continue_steps, cfg.continue_lr, warmup=cfg.continue_warmup_steps))
    sft_file = corpus_dir / "practice_sft.jsonl" if cfg.sft_data == "practice" else out / "qa" / "sft_train.jsonl"
    sft_train = lambda: training.sft_data(sft_file, db / "tokenizer.json", cfg)  # noqa: E731
    m["sft_gpt"] = st.run("sft_gpt", f"instruction-tune the GPT ({cfg.sft_steps} steps)",
                          phase("sft_gpt", lambda: training.load(models / "continue_gpt.safetensors"), sft_train, {},
                                cfg.sft_steps, cfg.sft_lr, sft=True))
    m["sft_retro"] = st.run("sft_retro", f"instruction-tune Retro, gate off: InstructRetro ({cfg.sft_steps} steps)",
                            phase("sft_retro", lambda: training.load(models / "retrofit_retro.safetensors"),
                                  sft_train, {}, cfg.sft_steps, cfg.sft_lr, sft=True))
    def eval_ppl() -> dict[str, Any]:
        pair = {"gpt": models / "continue_gpt.safetensors", "retro": models / "retrofit_retro.safetensors"}
        out = evaluation.perplexity(pair["gpt"], pair["retro"], db, cfg.seq_len, cfg.k_eval, 16, cfg.device, progress)
        # how strong the GPT baseline is: does it reuse a name it has read? (Retro: its decoder alone)
        out["name_reuse"] = evaluation.name_reuse({"gpt": pair["gpt"], "retro-decoder": pair["retro"]}, corpus_dir,
                                                  db / "tokenizer.json", max_tokens=cfg.seq_len, device=cfg.device)
        return out
    m["eval_ppl"] = st.run("eval_ppl", "perplexity on held-out documents", eval_ppl)

    def qa() -> dict[str, Any]:
        from pyretro.eval import write_report

        table, results = evaluation.question_answering(
            models / "sft_gpt.safetensors", models / "sft_retro.safetensors", out / "qa" / "qa_eval.jsonl",
            db / "tokenizer.json", max_context=cfg.qa_passages, max_new_tokens=cfg.qa_max_new_tokens,
            device=cfg.device, progress=progress)
        write_report(out / "eval", results, title="pyretro demo: QA on held-out entities", plot=False, stem="qa")
        nll = evaluation.answer_nll(models / "sft_gpt.safetensors", models / "sft_retro.safetensors",
                                    out / "qa" / "qa_eval.jsonl", db / "tokenizer.json", max_neighbors=4,
                                    device=cfg.device)
        for label, row in table.items():
            row.update(nll.get(label, {}))
        copy = evaluation.copying(models / "sft_gpt.safetensors", models / "sft_retro.safetensors",
                                  db / "tokenizer.json", device=cfg.device)
        return {"table": table, "copying": copy}
    m["eval_qa"] = st.run("eval_qa", "QA on held-out entities: 4 modes", qa)
    m["examples"] = st.run("examples", "answers generated with re-retrieval", lambda: {
        "examples": evaluation.examples_with_reretrieval(
            models / "sft_retro.safetensors", out / "qa" / "qa_eval.jsonl", db / "tokenizer.json",
            database.open_retriever(db), n=cfg.examples, k=cfg.k_train, max_context=cfg.qa_passages,
            max_new_tokens=cfg.qa_max_new_tokens, device=cfg.device)})

    walls = {n: (r["title"], r["wall_s"]) for n, r in st.records.items()}
    png = plot(out / "report.png", m)
    first = database.read_jsonl(corpus_dir / "eval.jsonl")[0]["text"]
    # a held-out person's document, past its first chunk (Retro reads neighbours from the second chunk on)
    prompt = " ".join(first.split()[:20])
    text = markdown(m, cfg.to_dict(), walls, png.name, try_it(str(out.resolve()), prompt))
    tmp = out / ".report.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "report.md")
    summary = {
        "config": cfg.to_dict(), "stages": {n: r["metrics"] for n, r in st.records.items()},
        "wall_s": {n: w for n, (_, w) in walls.items()}, "skipped": st.skipped, "ran": st.ran,
        "this_run_s": time.perf_counter() - t_start,
    }
    _write_json(out / "metrics.json", summary)
    return summary
