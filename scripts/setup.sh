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
