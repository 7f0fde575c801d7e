#!/usr/bin/env bash
# Build the documentation site offline into _docs/ and check it; open _docs/index.html when it is done.
# Every notebook is executed (the cells nbdev_test runs; `#| slow` cells are shown without outputs), rendered
# by MkDocs with mkdocs-jupyter, then checked: each notebook has its page, each page holds its figures, no page
# loads anything from the network, and, with Debian's chromium installed, MathJax typesets in a headless browser
# (screenshots in _docs/_screens/). About 5 minutes on 2 CPU cores. With internet, `nbdev_docs` builds the
# Quarto version of the same site from nbs/_quarto.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev,docs]"
.venv/bin/python tools/docs.py stage --workers "${DOCS_WORKERS:-2}"
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --quiet --clean -f tools/mkdocs.yml
.venv/bin/python tools/docs.py check
