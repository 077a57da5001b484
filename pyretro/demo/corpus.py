"""The demo's corpus: ``pyretro.data.synthetic`` with every entity mention spelt as the full name.

Why a variant: Retro retrieves with the text of one chunk. In the stock corpus a fact sentence names its
subject by full name, first name or pronoun at random, so about half of the 32-token chunks never mention
the surname and their neighbours are other people's documents (measured: 66-73% of held-out chunks find a
document of their own entity; 87-89% with full names). Spelling every mention as the full name makes each
chunk retrievable, which is the situation Retro is built for (a chunk about something retrieves text about
the same thing). The facts, splits and QA records are unchanged.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection
from typing import Any

from pyretro.data.synthetic import SyntheticCorpus, generate

__all__ = ["PRACTICE_SEED", "demo_corpus", "practice_people", "spell_full_names"]

PRACTICE_SEED = 1_000_003  # + the demo's seed: practice people never share the main corpus's random streams


def spell_full_names(corpus: SyntheticCorpus, share: float = 1.0, seed: int = 0) -> SyntheticCorpus:
    """Rewrites first-name-only and pronoun mentions (he/she, his/her) of each document's entity as the full
    name (possessives as ``Name's``), each with probability ``share``. In place; returns ``corpus``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if share == 0.0:
        return corpus
    ents = {e.id: e for e in corpus.entities}
    for doc in corpus.documents:
        e = ents[doc["entity"]]
        # one stream per document: adding documents (e.g. reading documents) leaves every other one unchanged
        rng = random.Random(f"pyretro-demo-names-{seed}-{doc['id']}")

        def sub(repl: str, keep_suffix: bool = False, rng: random.Random = rng):
            def f(m: re.Match) -> str:
                if rng.random() >= share:
                    return m.group(0)
                return repl + (m.group(1) or "" if keep_suffix else "")
            return f

        # the templates use he/she only as subjects and his/her only as possessives
        text = re.sub(rf"\b{re.escape(e.first)}\b(?! {re.escape(e.last)})('s)?", sub(e.name, True), doc["text"])
        text = re.sub(r"\b(?:he|she|He|She)\b", sub(e.name), text)
        text = re.sub(r"\b(?:his|her|His|Her)\b", sub(f"{e.name}'s"), text)
        doc["text"] = text
    return corpus


def demo_corpus(num_entities: int, docs_per_entity: int, seed: int, heldout_fraction: float,
                full_name_share: float, shared_lead: int = 0, reading_docs: int = 0,
                reading_questions: int = 3) -> SyntheticCorpus:
    c = generate(num_entities, docs_per_entity, seed, heldout_fraction=heldout_fraction, shared_lead=shared_lead,
                 reading_docs=reading_docs, reading_questions=reading_questions)
    c.params["full_name_share"] = full_name_share
    return spell_full_names(c, full_name_share, seed)


def practice_people(n: int, seed: int, shared_lead: int, avoid_names: Collection[str] = ()) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]]]:
    """Practice text about ``n`` one-off people (a seed stream of their own; none in the database, the evaluation
    or the main corpus, names clashing with ``avoid_names`` dropped), three documents each:

    - *bursty pairs*: one record per person, two of their documents joined. A person appears nowhere else, so the
      second document is predictable only by reading the first: the text that teaches copying from the context,
      which the main corpus never asks for (each of its facts recurs often enough to be memorized).
    - *reading conversations* (the instruction-tuning format): the third document as the context passage, then
      every question about the person with its answer, in a seeded order.
    """
    c = generate(n, 3, seed, heldout_fraction=0.0, shared_lead=shared_lead)
    spell_full_names(c, 1.0, seed)
    names = {e.id: e.name for e in c.entities}
    docs: dict[str, list[str]] = {}
    for d in c.documents:
        docs.setdefault(d["entity"], []).append(d["text"])
    questions: dict[str, list[dict[str, Any]]] = {}
    for q in c.qa:
        questions.setdefault(q["entity"], []).append(q)
    avoid = set(avoid_names)
    rng = random.Random(f"pyretro-demo-practice-{seed}")
    pairs, convs = [], []
    for e in c.entities:
        if names[e.id] in avoid:
            continue
        d, pid = docs[e.id], f"practice-{e.id}"  # ids apart from the main corpus's (same numbering)
        pairs.append({"id": f"{pid}-pair", "entity": pid, "text": d[0] + "\n\n" + d[1]})
        qs = rng.sample(questions[e.id], len(questions[e.id]))
        msgs = [m for q in qs for m in ({"role": "user", "content": q["question"]},
                                        {"role": "assistant", "content": q["answers"][0]})]
        convs.append({"id": f"{pid}-conversation", "entity": pid, "context": [d[2]], "messages": msgs})
    return pairs, convs
