"""Training: Retro / GPT pretraining data, instruction-tuning data, loops, checkpoints (docs/train.md)."""

from __future__ import annotations

# --- data (TRAIN-DATA) ---------------------------------------------------------------------------------------
from pyretro.train.data import (
    BlendedDataset,
    ResumableSampler,
    RetroDataset,
    blend_schedule,
    make_loader,
    store_pad_id,
)
from pyretro.train.sft_data import (
    SFTDataset,
    encode_conversation,
    load_conversations,
    load_documents,
    pack_lengths,
    passage_neighbors,
    read_jsonl,
)

__all__ = [
    "BlendedDataset", "ResumableSampler", "RetroDataset", "blend_schedule", "make_loader", "store_pad_id",
    "SFTDataset", "encode_conversation", "load_conversations", "load_documents", "pack_lengths", "passage_neighbors",
    "read_jsonl",
]

# --- loops, config, checkpoints (TRAIN-LOOP): add imports and `__all__ += [...]` below this line -------------
from pyretro.train.config import (  # noqa: E402
    DataSection,
    ModelSection,
    OptimSection,
    SFTSection,
    TrainConfig,
    TrainSection,
    load_config,
)
from pyretro.train.doc_data import DocumentDataset  # noqa: E402
from pyretro.train.loop import NonFiniteLossError, TrainResult, evaluate, train  # noqa: E402
from pyretro.train.models import build_model, prepare_sft  # noqa: E402
from pyretro.train.sft import sft  # noqa: E402

__all__ += [
    "DataSection", "ModelSection", "NonFiniteLossError", "OptimSection", "SFTSection", "TrainConfig", "TrainResult",
    "TrainSection", "DocumentDataset", "build_model", "evaluate", "load_config", "prepare_sft", "sft", "train",
]
