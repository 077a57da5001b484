"""Smoke test of an *installed* pyretro wheel; tools/check_wheel.sh runs it inside a fresh venv.

Checks, each failing loudly: no compiler is reachable (so nothing could have been built at install time);
pyretro is imported from the venv's site-packages (not a source tree); ``pyretro info --json`` runs and its
version and ``cuda_compiled`` are as expected; the fused chunked cross-attention (forward + backward) matches
the plain-PyTorch reference on random inputs; a chunk store is written, re-opened with full verification and
gathered from, against rows computed here in numpy; optionally ``pyretro bench kernels --quick`` runs.

    python wheel_smoke.py [--expect-cuda 0|1] [--expect-version X] [--bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "nvcc")


def check_no_compiler() -> None:
    found = {c: shutil.which(c) for c in COMPILERS if shutil.which(c)}
    assert not found, f"a compiler is on PATH (the check must run without one): {found}"
    for var in ("CC", "CXX", "CUDACXX"):
        assert os.environ.get(var, "/bin/false") == "/bin/false", f"{var} points at a compiler"


def check_installed_copy() -> str:
    import pyretro

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(pyretro.__file__).resolve()
    assert site in where.parents, f"pyretro imported from {where}, not from this venv's {site}"
    ext = list(where.parent.glob("_C*.so"))
    assert len(ext) == 1 and not ext[0].is_symlink(), f"expected one compiled _C in the wheel, got {ext}"
    return str(where.parent)


def check_info(expect_cuda: int | None, expect_version: str | None) -> dict:
    exe = Path(sys.executable).with_name("pyretro")  # the wheel's console script
    out = subprocess.run([str(exe), "info", "--json"], check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    from pyretro import __version__
    from pyretro._ext import _C

    core_version = _C.build_info().get("version")
    assert core_version == __version__, f"compiled core says {core_version}, package says {__version__}"
    if expect_version is not None:
        assert info["version"] == expect_version, f"version {info['version']} != expected {expect_version}"
    if expect_cuda is not None:
        assert bool(info["cuda_compiled"]) == bool(expect_cuda), f"cuda_compiled={info['cuda_compiled']}"
    assert info["build_type"] == "Release", info["build_type"]
    return info


def check_cca() -> float:
    import torch

    from pyretro.ops import chunked_cross_attention
    from pyretro.ops._cca_lib import fused_available
    from pyretro.ops.reference.cca import chunked_cross_attention_ref

    g = torch.Generator().manual_seed(0)
    B, N, H, D, C, K, R = 2, 37, 3, 16, 8, 2, 11  # N not a multiple of C; a partial last chunk
    L = -(-N // C)
    q = torch.randn(B, N, H, D, generator=g, requires_grad=True)
    k = torch.randn(B, L, K, R, H, D, generator=g, requires_grad=True)
    v = torch.randn(B, L, K, R, H, D, generator=g, requires_grad=True)
    mask = torch.rand(B, L, K, R, generator=g) > 0.25
    mask[0, 1] = False  # a chunk with no valid neighbour at all
    assert fused_available(q), "the fused CPU kernel is not available in this install"
    dout = torch.randn(B, N, H, D, generator=g)
    out = chunked_cross_attention(q, k, v, mask, C, rotary=True)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = chunked_cross_attention_ref(q, k, v, mask, C, rotary=True)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    err = (out - ref).abs().max().item()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return err


def check_store() -> int:
    import numpy as np
    import torch

    from pyretro.store import ChunkStore, ChunkStoreWriter

    rng = np.random.default_rng(0)
    chunk_len, vocab = 4, 1000
    docs = [rng.integers(0, vocab, size=n) for n in (9, 1, 0, 4, 13)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        with ChunkStoreWriter(path, chunk_len=chunk_len, vocab_size=vocab, fsync=False) as w:
            w.add_documents(docs)
        store = ChunkStore.open(path, verify=True)
        # expected rows: every chunk of every document, plus continuation within its document
        expect = []
        for d in docs:
            for s in range(0, len(d), chunk_len):
                row = d[s:s + 2 * chunk_len]
                expect.append(np.pad(row, (0, 2 * chunk_len - len(row))))
        assert len(store) == len(expect), (len(store), len(expect))
        ids = np.array([[0, len(store) - 1], [-1, 2]])
        tokens, mask = store.gather(ids)
        for (i, j), cid in np.ndenumerate(ids):
            want = np.zeros(2 * chunk_len, np.int64) if cid < 0 else expect[cid]
            assert (tokens[i, j] == want).all(), (cid, tokens[i, j], want)
        assert not mask[1, 0].any() and mask[0, 0].all()
        t_tokens, _ = store.gather(torch.from_numpy(ids))  # torch in, torch out
        assert isinstance(t_tokens, torch.Tensor) and (t_tokens.numpy() == tokens).all()
        return len(store)


def run_bench() -> int:
    exe = Path(sys.executable).with_name("pyretro")
    out = subprocess.run([str(exe), "bench", "kernels", "--quick", "--json", "--shapes", "B=1,N=64,S=64,reps=1"],
                         check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    assert rows and all(r["time_ms"] > 0 for r in rows), rows
    return len(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--expect-cuda", type=int, choices=[0, 1], default=None)
    p.add_argument("--expect-version", default=None)
    p.add_argument("--bench", action="store_true", help="also run `pyretro bench kernels --quick`")
    a = p.parse_args()
    check_no_compiler()
    where = check_installed_copy()
    info = check_info(a.expect_cuda, a.expect_version)
    err = check_cca()
    chunks = check_store()
    bench = f" bench_rows={run_bench()}" if a.bench else ""
    print(f"WHEEL SMOKE OK pyretro={info['version']} torch={info['torch']} cuda_compiled={info['cuda_compiled']} "
          f"cca_max_err={err:.2g} store_chunks={chunks}{bench} from={where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
