"""A general-English corpus for ULMFiT's stage 1 (language-model pretraining), assembled offline from Debian
packages that scripts/setup.sh installs:

| source | package | text | licence |
|---|---|---|---|
| wordnet | wordnet-base | WordNet 3.0 glosses and their example sentences | WordNet 3.0 (Princeton, permissive) |
| gcide | dict-gcide | the Collaborative International Dictionary of English's definitions (Webster 1913) | GPL-2+ |
| jargon | jargon-text | the Jargon File's entries (hacker slang, essays) | public domain |
| debian-reference | debian-reference-en | the Debian Reference's prose (commands and tables dropped) | GPL-2+ |

Not used: bible-kjv-text (its text is compressed for the `bible` program, and its English is 1611's) and the
fortunes (the target task: stage 2 reads their training split; its held-out texts must never be pretrained on).

Cleaning: dictionary markup (pronunciations, etymologies in brackets, source tags like "[1913 Webster]",
citations "--Author.") and the Jargon File's cross-reference braces are removed; short entries are grouped into
documents of at least `min_chars` characters. De-duplication: exact and near-duplicate paragraphs
(entries, glosses; research/text/near_duplicates.py) are kept once, across sources too, and any document that
contains a fortune (the normalised first 60 characters of one of the fortunes, held-out ones included) is
dropped, so pretraining cannot have read a test fortune. `build` writes corpus.txt (documents separated by
blank lines: `--config.data.source=folder --config.data.path=.../corpus.txt` reads one document per paragraph)
and manifest.json (sources, licences, documents, characters and word tokens per source, what was dropped, the
file's SHA-256) into ~/.cache/fastjax/corpora/NAME/.
"""

import dataclasses
import gzip
import json
import os
import re
from typing import Callable, Iterable, Sequence

from research.core import torch_files
from research.core.errors import InputError
from research.text import fortunes, near_duplicates, tokens

NAME = "general-english-v1"


@dataclasses.dataclass(frozen=True)
class Source:
    package: str
    path: str  # a file or folder the package installs
    licence: str
    read: Callable[[str], list[str]]  # path -> documents (paragraphs, before grouping)


def read_wordnet(directory: str) -> list[str]:
    """Glosses (definition; "example" sentences) of nouns, verbs, adjectives and adverbs, one per synset."""
    glosses = []
    for part in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(directory, f"data.{part}"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # the licence header lines start with spaces
                    continue
                gloss = line.split(" | ", 1)[1].strip()
                definition, *examples = [p.strip() for p in gloss.split(";")]
                sentences = [definition[:1].upper() + definition[1:] + "."]
                sentences += [e.strip('"') for e in examples if e.startswith('"')]
                glosses.append(" ".join(sentences))
    return glosses


_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_CITATION = re.compile(r"--\s?[A-Z][^\n{}]{0,50}$", re.MULTILINE)  # "--Shak.", "--Beau. & Fl." ending a line
_DERIVED = re.compile(r"\{([^{}\n]*)\}")  # "{Feat"e*ous*ly}": a derived word with stress and syllable marks
_SPACES = re.compile(r"[ \t]+")


def clean_gcide_entry(entry: str) -> str:
    """One dictionary entry as prose: the headword kept, its pronunciation, bracketed etymologies and source
    tags, and "--Author." citations removed, derived words' syllable marks removed, lines joined."""
    text = _PRONUNCIATION.sub("", entry)
    for _ in range(3):  # nested brackets, innermost first
        text = _BRACKETS.sub("", text)
    text = _CITATION.sub("", text)
    text = _DERIVED.sub(lambda m: re.sub("[*\"`]", "", m.group(1)), text).replace(" -- ", " ")
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line).replace(" ,", ",").replace(" .", ".")


def read_gcide(path: str) -> list[str]:
    """The entries of dictd's gcide.dict.dz (gzip-readable): an entry starts at a line without indentation."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    entries, current = [], []
    for line in text.splitlines():
        if line and not line[0].isspace() and current:
            entries.append("\n".join(current))
            current = []
        current.append(line)
    entries.append("\n".join(current))
    cleaned = [clean_gcide_entry(e) for e in entries if not e.startswith(("00-database", "00database"))]
    return [e for e in cleaned if len(e.split()) >= 4]


_ENTRY = re.compile(r"^   :([^:\n]+):(.*)$", re.MULTILINE)


def read_jargon(path: str) -> list[str]:
    """The Jargon File's entries (from ":word: ..." to the next), cross-reference braces removed."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    starts = [m.start() for m in _ENTRY.finditer(text)] + [len(text)]
    entries = []
    for begin, end in zip(starts, starts[1:]):
        body = text[begin:end].replace("{", "").replace("}", "")
        paragraphs = [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]
        head = _ENTRY.match(text, begin)
        paragraphs[0] = f"{head.group(1)}:{head.group(2)}".strip()
        entries.append("\n".join(paragraphs))
    return entries


def is_prose(paragraph: str) -> bool:
    """Mostly letters and spaces, no shell prompt or table rule: text, not commands or listings."""
    stripped = paragraph.strip()
    if not stripped or stripped[0] in "$#|+" or stripped.startswith(("┌", "─")):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in stripped)
    return letters >= 0.85 * len(stripped) and len(stripped.split()) >= 8


def read_debian_reference(path: str) -> list[str]:
    """The Debian Reference's prose paragraphs (see is_prose), lines joined."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if is_prose(p)]


SOURCES = {
    "wordnet": Source("wordnet-base", "/usr/share/wordnet", "WordNet 3.0 licence (Princeton; permissive)",
                      read_wordnet),
    "gcide": Source("dict-gcide", "/usr/share/dictd/gcide.dict.dz", "GPL-2+", read_gcide),
    "jargon": Source("jargon-text", "/usr/share/doc/jargon-text/jargon.txt.gz", "public domain", read_jargon),
    "debian-reference": Source("debian-reference-en", "/usr/share/debian-reference/debian-reference.en.txt.gz",
                               "GPL-2+", read_debian_reference),
}


def group(paragraphs: Iterable[str], min_chars: int) -> list[str]:
    """Consecutive paragraphs joined (by newlines) into documents of at least `min_chars` characters."""
    documents, current, size = [], [], 0
    for paragraph in paragraphs:
        current.append(paragraph)
        size += len(paragraph) + 1
        if size >= min_chars:
            documents.append("\n".join(current))
            current, size = [], 0
    if current:
        documents.append("\n".join(current))
    return documents


def protected_prefixes(texts: Sequence[str]) -> set[str]:
    """The normalised first near_duplicates.PREFIX characters of each text long enough to have them."""
    normal = (near_duplicates.normalise(t) for t in texts)
    return {n[:near_duplicates.PREFIX] for n in normal if len(n) >= near_duplicates.PREFIX}


def contains_any(document: str, prefixes: set[str]) -> bool:
    """Whether a protected prefix starts at one of the word starts of the normalised document."""
    normal = near_duplicates.normalise(document)
    starts = [0] + [m.end() for m in re.finditer(" ", normal)]
    return any(normal[s:s + near_duplicates.PREFIX] in prefixes for s in starts)


def assemble(sources: dict[str, Source], protected: Sequence[str] = (), min_chars: int = 1000) -> tuple[list, dict]:
    """(documents, report): each source read, cleaned and grouped; near-duplicates kept once; documents holding
    a protected text (the fortunes) dropped. The report counts per source what was kept and dropped."""
    prefixes = protected_prefixes(protected)
    documents, report, seen = [], {}, set()
    for name, source in sources.items():
        if not os.path.exists(source.path):
            raise InputError(f"{source.path} not found: install Debian's package with "
                             f"`apt-get install -y {source.package}` (scripts/setup.sh does)")
        paragraphs, duplicates = [], 0
        for paragraph in source.read(source.path):  # duplicates found entry by entry, across sources too
            paragraph_keys = near_duplicates.keys(paragraph)
            if seen.intersection(paragraph_keys):
                duplicates += 1
                continue
            seen.update(paragraph_keys)
            paragraphs.append(paragraph)
        kept, overlapping = [], 0
        for document in group(paragraphs, min_chars):
            if prefixes and contains_any(document, prefixes):
                overlapping += 1
                continue
            kept.append(document)
        words = sum(len(tokens.tokenize(d)) - 1 for d in kept)  # without each document's xxbos
        report[name] = {"package": source.package, "licence": source.licence, "documents": len(kept),
                        "characters": sum(map(len, kept)), "word_tokens": words,
                        "dropped_duplicate_paragraphs": duplicates, "dropped_containing_a_fortune": overlapping}
        documents.extend(kept)
    return documents, report


def corpus_dir(name: str = NAME) -> str:
    return os.path.join(torch_files.cache_root(), "corpora", name)


def every_fortune() -> list[str]:
    """Every fortune of every topic file, held-out ones included: the texts the corpus must not contain."""
    return [text for path in fortunes.topic_files().values() for text in fortunes.read_fortunes(path)]


def corpus_file(name: str = NAME) -> str:
    """The cache's corpus.txt of `name`; the default corpus is built first when missing (about a minute), with
    every fortune protected (no document containing one is kept)."""
    path = os.path.join(corpus_dir(name), "corpus.txt")
    if not os.path.isfile(path):
        if name != NAME:
            raise InputError(f"no corpus {name!r} in {os.path.dirname(corpus_dir(name))}: only {NAME!r} is built "
                             "on demand (scripts/build_corpus.py)")
        build(protected=every_fortune())
    return path


def build(directory: str | None = None, sources: dict[str, Source] | None = None, protected: Sequence[str] = (),
          min_chars: int = 1000) -> dict:
    """Writes corpus.txt and manifest.json into `directory` (default: the cache's corpora/general-english-v1)
    and returns the manifest. `protected`: texts no document may contain (pass every fortune)."""
    directory = directory or corpus_dir()
    documents, report = assemble(sources or SOURCES, protected, min_chars)
    os.makedirs(directory, exist_ok=True)
    corpus = os.path.join(directory, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n\n".join(d.replace("\n\n", "\n") for d in documents) + "\n")
    manifest = {"name": os.path.basename(directory), "sources": report, "documents": len(documents),
                "word_tokens": sum(r["word_tokens"] for r in report.values()),
                "characters": sum(r["characters"] for r in report.values()), "min_chars": min_chars,
                "sha256": torch_files.sha256(corpus)}
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
