#!/usr/bin/env bash
# Sets up a fresh Debian machine: the offline data packages (when apt is available), a virtual environment in
# .venv/ with the pinned dependencies and this project in editable mode, and the data wheels (recbole, plotnine).
# Under CI (CI=true) a failed install or download stops setup with one `setup: error:` line and exit status 1;
# elsewhere it is a warning and the data is fetched on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

failed() {
  if [ "${CI:-}" = "true" ]; then echo "setup: error: $1" >&2; exit 1; fi
  echo "setup: $1"
}

# Real offline data that Debian ships: Fashion-MNIST (MIT) and the fortunes texts (BSD; NLP and char-RNN).
PACKAGES=""
[ -d /usr/share/datasets/fashion-mnist ] || PACKAGES="$PACKAGES dataset-fashion-mnist"
[ -d /usr/share/games/fortunes ] || PACKAGES="$PACKAGES fortunes"
# The general-English corpus for language-model pretraining (research/text/general_corpus.py).
[ -d /usr/share/wordnet ] || PACKAGES="$PACKAGES wordnet-base"
[ -f /usr/share/dictd/gcide.dict.dz ] || PACKAGES="$PACKAGES dict-gcide"
[ -f /usr/share/doc/jargon-text/jargon.txt.gz ] || PACKAGES="$PACKAGES jargon-text"
[ -f /usr/share/debian-reference/debian-reference.en.txt.gz ] || PACKAGES="$PACKAGES debian-reference-en"
if [ -n "$PACKAGES" ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # Without them the experiments download the canonical files (Fashion-MNIST) or ask for a text folder.
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq $PACKAGES >/dev/null) \
    || failed "could not install$PACKAGES (apt-get)"
elif [ -n "$PACKAGES" ]; then
  failed "no apt-get to install$PACKAGES"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

# Real offline data that ships inside PyPI wheels (read in place by research/data/*, never unpacked by hand):
# MovieLens-100k in recbole's wheel, txhousing.csv in plotnine's wheel.
WHEELS="${FASTJAX_CACHE:-$HOME/.cache/fastjax}/wheels"
mkdir -p "$WHEELS"
.venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$WHEELS" recbole==1.2.1 plotnine==0.15.9 \
  || failed "could not fetch the recbole/plotnine wheels; MovieLens and txhousing will be downloaded on first use"
