"""A synthetic-knowledge corpus: fictional entities with arbitrary facts, each described by several documents.

Why it exists: a model that can retrieve *other* documents about an entity can copy that entity's facts, while
a model without retrieval can only predict them if it memorized them. Every fact is drawn independently of the
entity's name (so it cannot be guessed from the name) and is repeated, in different wordings and orders, in
every document of the entity (so retrieval finds it).

Splits (per entity):
- ``train`` entities: all their documents are LM training data and also sit in the retrieval database.
- ``heldout`` entities: ``eval_docs_per_entity`` of their documents are evaluation documents (never trained on,
  never in the database); the rest are in the retrieval database only (never trained on). Retrieval can find the
  facts of a held-out entity; a model without retrieval has never seen them.

Everything is deterministic by ``seed``; entity ``i`` depends only on ``(seed, i)``, so a larger corpus extends a
smaller one with the same seed, and :func:`iter_documents` streams corpora of any size in constant memory.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "Entity",
    "SyntheticCorpus",
    "generate",
    "iter_documents",
    "write_jsonl",
]

# Syllables for made-up names. Consonant-vowel(-consonant) shapes keep names pronounceable.
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "m"]
_SYLLABLES = sorted({o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS})  # 20*7*6 distinct = 840

_OCCUPATIONS = [
    "baker", "carpenter", "pharmacist", "architect", "violinist", "librarian", "geologist", "nurse", "pilot",
    "translator", "tailor", "beekeeper", "cartographer", "dentist", "engineer", "gardener", "journalist",
    "locksmith", "mathematician", "painter", "photographer", "plumber", "potter", "sculptor", "surveyor",
    "teacher", "veterinarian", "watchmaker", "chemist", "astronomer", "blacksmith", "chef", "economist",
    "firefighter", "glassblower", "historian", "jeweller", "lawyer", "midwife", "optician",
]
_COLOURS = [
    "red", "blue", "green", "yellow", "purple", "orange", "teal", "crimson", "amber", "violet", "indigo",
    "turquoise", "magenta", "olive", "maroon", "silver", "gold", "beige", "navy", "coral",
]
_PETS = [
    "cat", "dog", "parrot", "tortoise", "rabbit", "hamster", "goldfish", "ferret", "iguana", "canary",
    "hedgehog", "gecko", "pony", "owl", "goat", "chinchilla", "snake", "duck", "lizard", "pigeon",
]
_HOBBIES = [
    "chess", "rowing", "knitting", "archery", "fencing", "sailing", "juggling", "origami", "birdwatching",
    "pottery", "climbing", "calligraphy", "cycling", "fishing", "kite flying", "stargazing", "baking",
    "woodcarving", "tango", "crosswords",
]
_COMPANY_SUFFIXES = ["Industries", "Works", "Labs", "and Sons", "Holdings", "Group", "Foundry", "Trading"]

ATTRIBUTES = (
    "birth_year", "birth_city", "home_city", "occupation", "employer", "colour", "pet", "pet_name", "hobby",
)

# Fact sentences; {S}/{s} is the subject (full name, first name or pronoun) at/after a sentence start, {P} the
# possessive at a sentence start, {P_low} the possessive pronoun.
_FACT_TEMPLATES: dict[str, list[str]] = {
    "birth_year": [
        "{S} was born in {birth_year}.",
        "The year {s} was born was {birth_year}.",
        "{S} came into the world in {birth_year}.",
        "Records show that {s} was born in the year {birth_year}.",
    ],
    "birth_city": [
        "{S} was born in the city of {birth_city}.",
        "{P} birthplace is {birth_city}.",
        "{S} grew up in {birth_city}, the city of {P_low} birth.",
        "The city where {s} was born is {birth_city}.",
    ],
    "home_city": [
        "Today {s} lives in {home_city}.",
        "{S} now makes a home in {home_city}.",
        "These days {P_low} home is in {home_city}.",
        "{S} currently resides in {home_city}.",
    ],
    "occupation": [
        "{S} works as {a_occupation}.",
        "By profession, {s} is {a_occupation}.",
        "{P} job is that of {a_occupation}.",
        "{S} earns a living as {a_occupation}.",
    ],
    "employer": [
        "{S} is employed by {employer}.",
        "{P} employer is {employer}.",
        "{S} works for a company called {employer}.",
        "For many years {s} has worked at {employer}.",
    ],
    "colour": [
        "{P} favourite colour is {colour}.",
        "{S} likes the colour {colour} more than any other.",
        "Of all colours, {s} prefers {colour}.",
        "The colour {s} loves most is {colour}.",
    ],
    "pet": [
        "{S} keeps pet {pet}.",
        "{S} owns {a_pet}.",
        "At home, {s} looks after {a_pet}.",
        "{P} pet is {a_pet}.",
    ],
    "pet_name": [
        "The pet is called {pet_name}.",
        "{P} {pet} is named {pet_name}.",
        "{S} named the {pet} {pet_name}.",
        "Everyone knows the {pet} by the name {pet_name}.",
    ],
    "hobby": [
        "In {P_low} free time {s} enjoys {hobby}.",
        "{P} favourite hobby is {hobby}.",
        "{S} spends weekends on {hobby}.",
        "When not working, {s} loves {hobby}.",
    ],
}
_INTROS = [
    "This is a short profile of {F}.",
    "Here are some notes about {F}.",
    "{F} is the subject of this entry.",
    "The following text describes {F}.",
    "Not many people have heard of {F}.",
]
_FILLER_SUBJECTS = [
    "The weather that spring", "The local newspaper", "A neighbour", "The old town hall", "The morning train",
    "A passing stranger", "The village market", "An old friend", "The river", "The public library",
]
_FILLER_PREDICATES = [
    "was quiet for most of the year.", "mentioned nothing unusual.", "was busy as always.",
    "had seen better days.", "changed very little over time.", "is remembered by few.",
    "was the topic of some conversation.", "drew a small crowd on Sundays.",
]
_QUESTIONS: dict[str, list[str]] = {
    "birth_year": ["In what year was {F} born?", "When was {F} born?"],
    "birth_city": ["In which city was {F} born?", "Where was {F} born?"],
    "home_city": ["In which city does {F} live?", "Where does {F} live now?"],
    "occupation": ["What does {F} do for a living?", "What is {F}'s occupation?"],
    "employer": ["Which company does {F} work for?", "Who employs {F}?"],
    "colour": ["What is {F}'s favourite colour?", "Which colour does {F} like most?"],
    "pet": ["What kind of pet does {F} have?", "What animal does {F} keep as a pet?"],
    "pet_name": ["What is the name of {F}'s pet?", "What is {F}'s pet called?"],
    "hobby": ["What is {F}'s hobby?", "What does {F} enjoy in free time?"],
}


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _name(rng: random.Random, min_syl: int, max_syl: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(min_syl, max_syl))).capitalize()


def _unique_surname(i: int) -> str:
    """A surname unique to entity ``i``: its index through a fixed bijection of [0, S^3), then spelt in syllables."""
    s = len(_SYLLABLES)
    m = s**3
    x = (i + 123_457) % m * 387_420_489 % m  # 3^18 is coprime with m, so this permutes [0, m)
    parts = [_SYLLABLES[(x // s**k) % s] for k in range(3)]
    extra = i // m
    while extra:  # beyond S^3 entities: extra syllables keep names unique
        parts.append(_SYLLABLES[extra % s])
        extra //= s
    return "".join(parts).capitalize()


@dataclass(frozen=True)
class Entity:
    """A fictional person and its facts (``facts`` maps each of :data:`ATTRIBUTES` to a string)."""

    id: str
    index: int
    first: str
    last: str
    pronoun: str  # "he" or "she"
    facts: dict[str, str]
    heldout: bool

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class SyntheticCorpus:
    """A generated corpus. ``documents``: dicts ``id, entity, split, text`` with split in
    ``train | retrieval | eval``; ``qa``: dicts ``id, question, answers, entity, attribute, context_ids, split``
    (``context_ids`` = the entity's documents in the retrieval database, which all state the answer)."""

    entities: list[Entity]
    documents: list[dict[str, Any]]
    qa: list[dict[str, Any]]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[dict[str, Any]]:
        if name not in ("train", "retrieval", "eval"):
            raise ValueError(f"split: expected 'train', 'retrieval' or 'eval', got {name!r}")
        return [d for d in self.documents if d["split"] == name]

    @property
    def train_documents(self) -> list[dict[str, Any]]:
        """Documents for LM training (train entities only). They are also in the retrieval database."""
        return self.split("train")

    @property
    def database_documents(self) -> list[dict[str, Any]]:
        """Documents of the retrieval database: all train documents plus the held-out entities' non-eval ones."""
        return [d for d in self.documents if d["split"] in ("train", "retrieval")]

    @property
    def eval_documents(self) -> list[dict[str, Any]]:
        """Held-out evaluation documents: neither trained on nor in the database; their facts are in the database."""
        return self.split("eval")

    def qa_split(self, heldout: bool) -> list[dict[str, Any]]:
        want = "heldout" if heldout else "train"
        return [q for q in self.qa if q["split"] == want]

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Writes ``documents.jsonl`` (all), ``train.jsonl``, ``database.jsonl``, ``eval.jsonl``, ``qa.jsonl`` and
        ``entities.jsonl`` into ``directory`` (each atomically). Returns the paths by name."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        ents = ({"id": e.id, "name": e.name, "heldout": e.heldout, **e.facts} for e in self.entities)
        files = {
            "documents": self.documents,
            "train": self.train_documents,
            "database": self.database_documents,
            "eval": self.eval_documents,
            "qa": self.qa,
            "entities": ents,
        }
        out = {}
        for name, records in files.items():
            out[name] = write_jsonl(d / f"{name}.jsonl", records)
        return out


def _make_pools(seed: int, num_cities: int, num_companies: int) -> tuple[list[str], list[str]]:
    rng = random.Random(f"pyretro-synthetic-pools-{seed}")
    cities: list[str] = []
    seen: set[str] = set()
    while len(cities) < num_cities:
        c = _name(rng, 2, 3)
        if c not in seen:
            seen.add(c)
            cities.append(c)
    companies: list[str] = []
    while len(companies) < num_companies:
        c = f"{_name(rng, 2, 3)} {rng.choice(_COMPANY_SUFFIXES)}"
        if c not in seen:
            seen.add(c)
            companies.append(c)
    return cities, companies


def _entity(i: int, seed: int, cities: list[str], companies: list[str], heldout_fraction: float) -> Entity:
    rng = random.Random(f"pyretro-synthetic-entity-{seed}-{i}")
    birth_city = rng.choice(cities)
    home_city = rng.choice([c for c in rng.sample(cities, 2) if c != birth_city])
    facts = {
        "birth_year": str(rng.randint(1900, 2005)),
        "birth_city": birth_city,
        "home_city": home_city,
        "occupation": rng.choice(_OCCUPATIONS),
        "employer": rng.choice(companies),
        "colour": rng.choice(_COLOURS),
        "pet": rng.choice(_PETS),
        "pet_name": _name(rng, 2, 2),
        "hobby": rng.choice(_HOBBIES),
    }
    return Entity(
        id=f"e{i:07d}",
        index=i,
        first=_name(rng, 2, 2),
        last=_unique_surname(i),
        pronoun=rng.choice(["he", "she"]),
        facts=facts,
        heldout=rng.random() < heldout_fraction,
    )


def _fact_sentence(e: Entity, attr: str, rng: random.Random) -> str:
    poss = "His" if e.pronoun == "he" else "Her"
    subj = rng.choice([e.name, e.first, e.pronoun])
    return rng.choice(_FACT_TEMPLATES[attr]).format(
        S=subj[0].upper() + subj[1:], s=subj, P=rng.choice([f"{e.name}'s", f"{e.first}'s", poss]),
        P_low=poss.lower(), a_occupation=_a(e.facts["occupation"]), a_pet=_a(e.facts["pet"]), **e.facts,
    )


def _attribute_order(rng: random.Random) -> list[str]:
    attrs = list(ATTRIBUTES)
    rng.shuffle(attrs)
    attrs.remove("pet_name")  # pet_name reads best right after pet
    attrs.insert(attrs.index("pet") + 1, "pet_name")
    return attrs


def _lead(e: Entity, seed: int, n_facts: int) -> tuple[list[str], set[str]]:
    """The entity's canonical opening: an intro and ``n_facts`` fact sentences in one fixed wording and order
    (extended by one when the cut would split pet / pet_name). Empty when ``n_facts`` is 0."""
    if n_facts <= 0:
        return [], set()
    rng = random.Random(f"pyretro-synthetic-lead-{seed}-{e.index}")
    order = _attribute_order(rng)
    n = n_facts  # <= len(order), checked by _check
    if n < len(order) and order[n - 1] == "pet":
        n += 1
    return [rng.choice(_INTROS).format(F=e.name)] + [_fact_sentence(e, a, rng) for a in order[:n]], set(order[:n])


def _document(e: Entity, rng: random.Random, filler: tuple[int, int], lead: tuple[list[str], set[str]]) -> str:
    lead_sents, lead_attrs = lead
    sentences = list(lead_sents) or [rng.choice(_INTROS).format(F=e.name)]
    fact_sents = [_fact_sentence(e, a, rng) for a in _attribute_order(rng) if a not in lead_attrs]
    n_fill = rng.randint(*filler)
    for _ in range(n_fill):
        pos = rng.randint(0 if lead_sents else 1, len(fact_sents))
        fact_sents.insert(pos, f"{rng.choice(_FILLER_SUBJECTS)} {rng.choice(_FILLER_PREDICATES)}")
    sentences += fact_sents
    return " ".join(sentences)


def _reading_document(e: Entity, rng: random.Random, filler: tuple[int, int], lead: tuple[list[str], set[str]],
                      n_questions: int) -> str:
    """A document of ``e`` followed by questions about it and their answers (reading-comprehension text, as web
    corpora hold in FAQs and quizzes): the text that teaches a model to answer from what precedes in its context."""
    qa = [f"Question: {rng.choice(_QUESTIONS[a]).format(F=e.name)}\nAnswer: {e.facts[a]}"
          for a in rng.sample(ATTRIBUTES, n_questions)]
    return _document(e, rng, filler, lead) + "\n" + "\n".join(qa)


def _check(num_entities: int, docs_per_entity: int, eval_docs_per_entity: int, heldout_fraction: float,
           shared_lead: int = 0, reading_docs: int = 0, reading_questions: int = 3) -> None:
    if num_entities < 1:
        raise ValueError(f"num_entities must be >= 1, got {num_entities}")
    if docs_per_entity < 2:
        raise ValueError(f"docs_per_entity must be >= 2 (facts must repeat across documents), got {docs_per_entity}")
    if not 1 <= eval_docs_per_entity < docs_per_entity:
        raise ValueError(
            f"eval_docs_per_entity must be in [1, docs_per_entity), got {eval_docs_per_entity} "
            f"with docs_per_entity={docs_per_entity}"
        )
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    if not 0 <= shared_lead <= len(ATTRIBUTES):
        raise ValueError(f"shared_lead must be in [0, {len(ATTRIBUTES)}] (facts per entity), got {shared_lead}")
    if reading_docs < 0:
        raise ValueError(f"reading_docs must be >= 0, got {reading_docs}")
    if not 1 <= reading_questions <= len(ATTRIBUTES):
        raise ValueError(f"reading_questions must be in [1, {len(ATTRIBUTES)}] (facts per entity), got {reading_questions}")


def _iter_entities(
    num_entities: int, docs_per_entity: int, seed: int, heldout_fraction: float, eval_docs_per_entity: int,
    filler: tuple[int, int], num_cities: int, num_companies: int, shared_lead: int = 0, reading_docs: int = 0,
    reading_questions: int = 3,
) -> Iterator[tuple[Entity, list[dict[str, Any]]]]:
    _check(num_entities, docs_per_entity, eval_docs_per_entity, heldout_fraction, shared_lead, reading_docs,
           reading_questions)
    cities, companies = _make_pools(seed, num_cities, num_companies)
    for i in range(num_entities):
        e = _entity(i, seed, cities, companies, heldout_fraction)
        rng = random.Random(f"pyretro-synthetic-docs-{seed}-{i}")
        lead = _lead(e, seed, shared_lead)
        docs = []
        for j in range(docs_per_entity):
            if not e.heldout:
                split = "train"
            else:
                split = "eval" if j >= docs_per_entity - eval_docs_per_entity else "retrieval"
            docs.append({"id": f"{e.id}-d{j}", "entity": e.id, "split": split, "text": _document(e, rng, filler, lead)})
        if not e.heldout:  # a held-out person's questions are the evaluation's: never answered in training text
            rrng = random.Random(f"pyretro-synthetic-reading-{seed}-{i}")  # own stream: other documents unchanged
            for j in range(reading_docs):
                text = _reading_document(e, rrng, filler, lead, reading_questions)
                docs.append({"id": f"{e.id}-r{j}", "entity": e.id, "split": "train", "text": text})
        yield e, docs


def iter_documents(
    num_entities: int,
    docs_per_entity: int = 4,
    seed: int = 0,
    *,
    heldout_fraction: float = 0.2,
    eval_docs_per_entity: int = 1,
    filler: tuple[int, int] = (1, 3),
    num_cities: int = 200,
    num_companies: int = 150,
    shared_lead: int = 0,
    reading_docs: int = 0,
    reading_questions: int = 3,
) -> Iterator[dict[str, Any]]:
    """Streams the documents of :func:`generate` (same arguments, same documents) in constant memory."""
    for _, docs in _iter_entities(
        num_entities, docs_per_entity, seed, heldout_fraction, eval_docs_per_entity, filler, num_cities, num_companies,
        shared_lead, reading_docs, reading_questions,
    ):
        yield from docs


def generate(
    num_entities: int,
    docs_per_entity: int = 4,
    seed: int = 0,
    *,
    heldout_fraction: float = 0.2,
    eval_docs_per_entity: int = 1,
    filler: tuple[int, int] = (1, 3),
    num_cities: int = 200,
    num_companies: int = 150,
    shared_lead: int = 0,
    reading_docs: int = 0,
    reading_questions: int = 3,
) -> SyntheticCorpus:
    """Generates ``num_entities`` entities with ``docs_per_entity`` documents each (~600 bytes per document).

    ``heldout_fraction`` of the entities are held out; of each held-out entity's documents the last
    ``eval_docs_per_entity`` are evaluation documents and the others go to the retrieval database only.
    ``filler`` is the (min, max) number of fact-free filler sentences per document. Cities and companies come
    from pools of ``num_cities`` / ``num_companies`` made-up names, so guessing a city has a 1/num_cities prior.
    ``shared_lead`` > 0 opens every document of an entity with the same canonical lead: an intro and that many
    fact sentences in one fixed wording and order (the standard biography that articles about a person reuse);
    the other facts follow in varied wording and order. 0 (the default): every document worded independently.
    ``reading_docs`` > 0 adds that many reading-comprehension documents per training entity (``{id}-r{j}``, split
    ``train``): a document of the entity followed by ``reading_questions`` of its questions, each with its answer.
    Held-out entities get none, so their questions (the QA evaluation) are never answered in training text.
    """
    entities, documents, qa = [], [], []
    for e, docs in _iter_entities(
        num_entities, docs_per_entity, seed, heldout_fraction, eval_docs_per_entity, filler, num_cities, num_companies,
        shared_lead, reading_docs, reading_questions,
    ):
        entities.append(e)
        documents.extend(docs)
        ctx = [d["id"] for d in docs if d["split"] != "eval"]
        qrng = random.Random(f"pyretro-synthetic-qa-{seed}-{e.index}")
        for a in ATTRIBUTES:
            qa.append({
                "id": f"{e.id}-q-{a}",
                "question": qrng.choice(_QUESTIONS[a]).format(F=e.name),
                "answers": [e.facts[a]],
                "entity": e.id,
                "attribute": a,
                "context_ids": ctx,
                "split": "heldout" if e.heldout else "train",
            })
    params = {
        "num_entities": num_entities, "docs_per_entity": docs_per_entity, "heldout_fraction": heldout_fraction,
        "eval_docs_per_entity": eval_docs_per_entity, "filler": list(filler), "num_cities": num_cities,
        "num_companies": num_companies, "shared_lead": shared_lead,
        "reading_docs": reading_docs, "reading_questions": reading_questions,
    }
    return SyntheticCorpus(entities=entities, documents=documents, qa=qa, seed=seed, params=params)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Writes one JSON object per line, atomically (temp file + rename). Streams: ``records`` may be a generator."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False))
                f.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
