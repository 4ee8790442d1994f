"""The general-English corpus (research/text/general_corpus.py) on small files in the packages' formats: markup
cleaned, duplicates kept once, a document holding a protected fortune dropped, the manifest's counts."""

import gzip
import json
import os

from research.text import general_corpus, tokens

FORTUNE = ("It is practically impossible to teach good programming style to students that have had prior "
           "exposure to BASIC.")

WORDNET_LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n",
    "00039211 04 n 01 interplay 0 001 @ 00039021 n 0000 | reciprocal action and reaction  \n",
    "00039545 04 n 01 brush 4 001 @ 00039297 n 0000 | contact with something dangerous; "
    '"I had a brush with danger"  \n',
]

GCIDE = """00-database-info
   This file was converted from the original database.

Abdicative \\Ab"di*ca*tive\\, a. [L. abdicativus.]
   Causing, or implying, abdication. [R.] --Bailey.
   [1913 Webster]

Feateous \\Feat"e*ous\\, a.
   Dexterous; neat. -- {Feat"e*ous*ly}, adv.
   [1913 Webster]

Abdicative \\Ab"di*ca*tive\\, a. [L. abdicativus.]
   Causing, or implying, abdication. [R.] --Bailey.
   [1913 Webster]
"""

JARGON = f"""The Jargon File, front matter that is not an entry.

   :BASIC: /bay'·sic/, n.

   A programming language. Edsger W. Dijkstra observed that "{FORTUNE}" See
   also {{Pascal}}.

   :baroque: adj.

   [common] Feature-encrusted; complex; gaudy; verging on excessive. See also
   {{rococo}}.
"""


def fake_sources(tmp_path) -> dict:
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    for part in ("noun", "verb", "adj", "adv"):
        (wordnet / f"data.{part}").write_text("".join(WORDNET_LINES) if part == "noun" else "")
    with gzip.open(tmp_path / "gcide.dict.dz", "wt") as f:
        f.write(GCIDE)
    with gzip.open(tmp_path / "jargon.txt.gz", "wt") as f:
        f.write(JARGON)
    s = general_corpus.SOURCES
    return {"wordnet": general_corpus.Source("wordnet-base", str(wordnet), "WordNet", s["wordnet"].read),
            "gcide": general_corpus.Source("dict-gcide", str(tmp_path / "gcide.dict.dz"), "GPL-2+", s["gcide"].read),
            "jargon": general_corpus.Source("jargon-text", str(tmp_path / "jargon.txt.gz"), "public domain",
                                            s["jargon"].read)}


def test_readers_clean_the_packages_formats(tmp_path):
    sources = fake_sources(tmp_path)
    assert sources["wordnet"].read(sources["wordnet"].path) == [
        "Reciprocal action and reaction.", "Contact with something dangerous. I had a brush with danger"]
    assert sources["gcide"].read(sources["gcide"].path) == [
        "Abdicative, a. Causing, or implying, abdication.", "Feateous, a. Dexterous; neat. Feateously, adv.",
        "Abdicative, a. Causing, or implying, abdication."]
    jargon = sources["jargon"].read(sources["jargon"].path)
    assert [j.split("\n")[0] for j in jargon] == ["BASIC: /bay'·sic/, n.", "baroque: adj."]
    assert "{" not in jargon[0] and "See also Pascal." in jargon[0]


def test_build_deduplicates_drops_protected_text_and_reports(tmp_path):
    out = str(tmp_path / "corpus")
    manifest = general_corpus.build(out, fake_sources(tmp_path), protected=[FORTUNE, "Short one."], min_chars=1)
    sources = manifest["sources"]
    assert sources["gcide"]["documents"] == 2 and sources["gcide"]["dropped_duplicate_paragraphs"] == 1
    assert sources["jargon"]["documents"] == 1 and sources["jargon"]["dropped_containing_a_fortune"] == 1
    glosses = ["Reciprocal action and reaction.", "Contact with something dangerous. I had a brush with danger"]
    assert sources["wordnet"]["word_tokens"] == sum(len(tokens.tokenize(g)) - 1 for g in glosses) > 10
    assert sources["wordnet"]["licence"] == "WordNet"
    with open(os.path.join(out, "corpus.txt"), encoding="utf-8") as f:
        documents = f.read().strip("\n").split("\n\n")
    assert len(documents) == manifest["documents"] == 5 and not any("BASIC" in d for d in documents)
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["sha256"] == manifest["sha256"]
