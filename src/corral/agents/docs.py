"""A small ranked search (Okapi BM25) over the document set shipped in ``agents/docs/``.

Documents are read with :mod:`importlib.resources`, so they are found in a wheel, a zip or an
editable install alike. :class:`SearchIndex` is immutable once built and safe to share between
concurrent runs; :func:`lazy_index` builds one on first use and keeps it in a closure, so each
registry that registers the ``search_docs`` tool owns its own index and nothing is cached at
module level.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

DOCUMENTS_PACKAGE = "corral.agents"
DOCUMENTS_PATH = ("docs", "documents.json")
MAX_LIMIT = 10

# BM25 parameters: the usual defaults from the literature.
_K1 = 1.5
_B = 0.75
# Title words count as if they appeared this many times more in the text.
_TITLE_WEIGHT = 2
# Stems are prefixes of this length: crude, but it puts "isolate", "isolated" and "isolation"
# together without a stemming library, and false merges barely move BM25 on a small corpus.
_STEM_LENGTH = 6

_TOKEN = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_STOPWORDS = frozenset(
    """
    a about after again all also am an and any are as at be been before being between both but
    by can could did do does doing during each few for from further had has have having he her
    here hers him his how i if in into is it its itself just me more most my no nor not now of
    off on once only or other our out over own please same she should so some such tell than
    that the their them then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your
    convert calculate compute explain know many much today todays date
    """.split()  # noqa: SIM905 - a word list reads better as text than as 130 quoted strings
)


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str
    topic: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    document: Document
    score: float
    snippet: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.document.id,
            "title": self.document.title,
            "score": self.score,
            "snippet": self.snippet,
        }


def stem(token: str) -> str:
    """A crude stem: a plural ``s`` removed, then the first :data:`_STEM_LENGTH` letters."""
    if token.isdigit():
        return token
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        token = token[:-3] + "y" if token.endswith("ies") and len(token) > 4 else token[:-1]
    return token[:_STEM_LENGTH]


def tokenize(text: str) -> list[str]:
    """Lower-case stems of ``text`` without stop words, one-letter words or numbers below 100.

    Short numbers ("7" in "12*7") say nothing about a topic; years and constants ("1969",
    "299") do, so they stay.
    """
    tokens = []
    for word in _TOKEN.findall(text.lower()):
        if word in _STOPWORDS or len(word) < 2 or (word.isdigit() and len(word) < 3):
            continue
        tokens.append(stem(word))
    return tokens


def parse_documents(raw: str) -> tuple[Document, ...]:
    """Documents from the JSON text ``{"documents": [{"id", "title", "text", "topic"?}]}``.

    Raises :class:`ValueError` naming the first bad entry: a missing field or a repeated id.
    """
    data = json.loads(raw)
    entries = data.get("documents") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError('the document set must be an object with a "documents" list')
    documents: list[Document] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"document #{position} must be an object")
        fields: dict[str, str] = {}
        for name in ("id", "title", "text", "topic"):
            value = entry.get(name, "" if name == "topic" else None)
            if not isinstance(value, str) or (name != "topic" and not value.strip()):
                raise ValueError(f"document #{position} needs a non-empty string {name!r}")
            fields[name] = value
        if fields["id"] in seen:
            raise ValueError(f"document id {fields['id']!r} appears twice")
        seen.add(fields["id"])
        documents.append(Document(**fields))
    return tuple(documents)


def load_documents() -> tuple[Document, ...]:
    """The document set shipped with corral. Reads a small package file (synchronous I/O)."""
    resource = resources.files(DOCUMENTS_PACKAGE)
    for part in DOCUMENTS_PATH:  # one part per call: Traversable.joinpath takes one on 3.11
        resource = resource.joinpath(part)
    return parse_documents(resource.read_text(encoding="utf-8"))


class SearchIndex:
    """BM25 over ``documents``; immutable after construction, so any task may search it."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.documents = tuple(documents)
        self._frequencies: tuple[Counter[str], ...] = tuple(
            Counter(tokenize(f"{doc.title} " * _TITLE_WEIGHT + doc.text)) for doc in self.documents
        )
        self._lengths = tuple(sum(freq.values()) for freq in self._frequencies)
        self._average_length = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        document_frequency: Counter[str] = Counter()
        for freq in self._frequencies:
            document_frequency.update(freq.keys())
        total = len(self.documents)
        self._idf = MappingProxyType(
            {
                term: math.log(1 + (total - count + 0.5) / (count + 0.5))
                for term, count in document_frequency.items()
            }
        )

    def __len__(self) -> int:
        return len(self.documents)

    def search(self, query: str, limit: int = 3) -> list[Hit]:
        """The ``limit`` best documents for ``query``, best first; only those that match.

        Scores are rounded to 4 decimals and ties go to the smaller id, so the same query
        always gives the same list.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        terms = set(tokenize(query))
        if not terms or not self.documents:
            return []
        scored: list[tuple[float, str, int]] = []
        for position, freq in enumerate(self._frequencies):
            score = self._score(terms, freq, self._lengths[position])
            if score > 0:
                scored.append((round(score, 4), self.documents[position].id, position))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [
            Hit(self.documents[pos], score, best_sentence(self.documents[pos].text, terms))
            for score, _, pos in scored[:limit]
        ]

    def _score(self, terms: set[str], freq: Counter[str], length: int) -> float:
        norm = _K1 * (1 - _B + _B * length / (self._average_length or 1.0))
        score = 0.0
        for term in terms:
            count = freq.get(term, 0)
            if count:
                score += self._idf[term] * count * (_K1 + 1) / (count + norm)
        return score


def best_sentence(text: str, terms: set[str]) -> str:
    """The sentence of ``text`` that holds the most of ``terms`` (the first one on a tie)."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        return text.strip()
    overlaps = [len(terms.intersection(tokenize(sentence))) for sentence in sentences]
    return sentences[overlaps.index(max(overlaps))]


def lazy_index(
    loader: Callable[[], Sequence[Document]] = load_documents,
) -> Callable[[], SearchIndex]:
    """A function returning one :class:`SearchIndex`, built from ``loader()`` on its first call.

    The index lives in the returned closure, not in this module. Two tasks racing on the first
    call may both build it; they build equal indexes and one wins, which is harmless.
    """
    built: list[SearchIndex] = []

    def get_index() -> SearchIndex:
        if not built:
            built.append(SearchIndex(loader()))
        return built[0]

    return get_index
