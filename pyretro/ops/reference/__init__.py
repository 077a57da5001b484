"""Plain-PyTorch references of every op: the semantics contract, and the fallback path."""
