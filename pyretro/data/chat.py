"""The chat template shared by instruction tuning (``pyretro.train``) and evaluation (``pyretro.eval``).

InstructRetro places retrieved passages in the prompt and trains on the assistant's answer only. One template,
used by both sides, so a prompt at evaluation is byte-for-byte what the model saw in tuning::

    <|system|>{system}\\n                       (optional)
    <|user|><|context|>{passage 1}\\n ... <|context|>{passage n}\\n{question}\\n
    <|assistant|> {answer}<|eod|>
    <|user|>{next question}\\n                   (multi-turn: more user/assistant pairs)
    <|assistant|>...

The answer starts with a space: with a byte-level BPE a word is one token after a space (`` maroon``) and
several others without one (``m ar oon``), and the passage states the answer mid-sentence, after a space.
Without the space the answer is spelt in tokens the passage never uses, and a small model cannot copy it
from its context (measured: docs/demo.md). Generated answers are stripped.

Role markers are the special tokens of a tokenizer trained by :func:`pyretro.data.tokenizer.train_bpe`; a
user's tokenizer without them gets plain-text markers (``System: ``, ``User: ``, ``Assistant:``,
``Context: ``) and its own end-of-text token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyretro.data.tokenizer import special_ids

__all__ = ["ROLES", "ChatTemplate", "Conversation", "Turn", "answer_text"]

ROLES = ("system", "user", "assistant")

_SPECIAL = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "context": "<|context|>"}
_PLAIN = {"system": "System: ", "user": "User: ", "assistant": "Assistant:", "context": "Context: "}


@dataclass
class Turn:
    role: str  # "user" | "assistant" ("system" only as Conversation.system)
    content: str


@dataclass
class Conversation:
    """One sample: optional system text, context passages (prepended to the first user turn), alternating turns."""

    turns: list[Turn]
    context: list[str] = field(default_factory=list)
    system: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Conversation:
        """Accepts ``{"system"?, "context"?: [str], "messages"|"conversations": [{"role", "content"}]}`` or a
        QA record ``{"question", "answer"|"answers", "context"?}`` (first answer is the target)."""
        if "question" in d:
            ans = d.get("answer", None)
            if ans is None:
                answers = d.get("answers") or []
                ans = answers[0] if answers else ""
            ctx = d.get("context") or d.get("contexts") or []
            turns = [Turn("user", str(d["question"])), Turn("assistant", str(ans))]
            return cls(turns, [ctx] if isinstance(ctx, str) else [str(c) for c in ctx], d.get("system"))
        msgs = d.get("messages", d.get("conversations"))
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("conversation: expected a non-empty 'messages' list (or a 'question' field)")
        system = d.get("system")
        turns: list[Turn] = []
        for i, m in enumerate(msgs):
            role, content = m.get("role"), m.get("content")
            if role == "system" and i == 0 and system is None:
                system = content
                continue
            if role not in ("user", "assistant") or not isinstance(content, str):
                raise ValueError(f"conversation: message {i} needs role user|assistant and string content, got {m!r}")
            turns.append(Turn(role, content))
        ctx = d.get("context") or []
        return cls(turns, [ctx] if isinstance(ctx, str) else [str(c) for c in ctx], system)


def answer_text(content: str) -> str:
    """An assistant turn as rendered after its marker: one leading space (see the module docstring)."""
    return content if not content or content[0].isspace() else " " + content


class ChatTemplate:
    """Renders conversations to token ids with a loss mask over assistant answers."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.markers = _SPECIAL if all(t in vocab for t in _SPECIAL.values()) else _PLAIN
        ids = special_ids(tokenizer)
        self.eod_id: int | None = ids.get("eod")
        self.pad_id: int = ids.get("pad") if ids.get("pad") is not None else 0

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def stop_ids(self) -> list[int]:
        """Token ids that end an answer: the end token, and the role markers of the special-token template (a
        model that opens a new turn has finished its answer)."""
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        stops = [self.eod_id] if self.eod_id is not None else []
        return stops + [vocab[m] for m in self.markers.values() if m in vocab and m.startswith("<|")]

    def prompt_text(self, question: str, context: Sequence[str] = (), system: str | None = None) -> str:
        """The prompt for a single question, ending with the assistant marker (generation continues from it)."""
        return self._render_user(question, context, system) + self.markers["assistant"]

    def _render_user(self, text: str, context: Sequence[str], system: str | None) -> str:
        m = self.markers
        head = f"{m['system']}{system}\n" if system else ""
        ctx = "".join(f"{m['context']}{p}\n" for p in context)
        return f"{head}{m['user']}{ctx}{text}\n"

    def encode_prompt(self, question: str, context: Sequence[str] = (), system: str | None = None) -> list[int]:
        return self._ids(self.prompt_text(question, context, system))

    def encode(self, conv: Conversation, *, all_turns: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int64 ``[n]`` and loss mask bool ``[n]`` (True on answer tokens and their end token).

        InstructRetro trains on the last assistant turn only; ``all_turns=True`` counts every assistant turn.
        """
        if not conv.turns or conv.turns[-1].role != "assistant":
            raise ValueError("conversation: the last turn must be the assistant's answer")
        ids: list[int] = []
        mask: list[bool] = []
        last = len(conv.turns) - 1
        for i, t in enumerate(conv.turns):
            if t.role == "user":
                first = i == 0
                text = self._render_user(t.content, conv.context if first else (), conv.system if first else None)
                piece = self._ids(text)
                ids += piece
                mask += [False] * len(piece)
            else:
                head = self._ids(self.markers["assistant"])
                body = self._ids(answer_text(t.content)) + ([self.eod_id] if self.eod_id is not None else [])
                counts = all_turns or i == last
                ids += head + body
                mask += [False] * len(head) + [counts] * len(body)
                if i != last:  # a newline between turns keeps later user markers at a line start
                    nl = self._ids("\n")
                    ids += nl
                    mask += [False] * len(nl)
        return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
