#!/usr/bin/env bash
# Sets up a fresh Debian machine: the Fashion-MNIST data package (when apt is available),
# a virtual environment in .venv/ with the pinned dependencies, and this project in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # Real Fashion-MNIST (MIT) ships in Debian; without it the experiment downloads the canonical files.
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "setup: could not install dataset-fashion-mnist; the data will be downloaded on first use"
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
  || echo "setup: could not fetch the recbole/plotnine wheels; MovieLens and txhousing will be downloaded on first use"
