"""Builds the general-English pretraining corpus (research/text/general_corpus.py) from the Debian packages that
scripts/setup.sh installs, with every fortune protected (no document containing one is kept), and prints its
manifest:
  .venv/bin/python scripts/build_corpus.py [--out DIR]
Default DIR: ~/.cache/fastjax/corpora/general-english-v1 (corpus.txt, manifest.json); about a minute on 2 cores.
"""

import json

from absl import app, flags

from research.text import general_corpus

_OUT = flags.DEFINE_string("out", "", "Output folder (default: the cache's corpora/general-english-v1).")


def main(argv):
    del argv
    manifest = general_corpus.build(_OUT.value or None, protected=general_corpus.every_fortune())
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    app.run(main)
