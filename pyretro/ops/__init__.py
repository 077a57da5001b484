"""pyretro's tensor ops, registered with ``torch.library`` (namespace ``pyretro``).

Each op has a fused C++ CPU path, a CUDA path (when compiled), a fake kernel for ``torch.compile``,
autograd, and a plain-PyTorch reference in ``pyretro.ops.reference`` with identical semantics.
"""

from pyretro.ops.cca import chunked_cross_attention
from pyretro.ops.gather import DeviceChunkStore, gather_neighbors
from pyretro.ops.rope import rope, rope_, rope_qk, rope_qk_

__all__ = ["DeviceChunkStore", "chunked_cross_attention", "gather_neighbors", "rope", "rope_", "rope_qk",
           "rope_qk_"]
