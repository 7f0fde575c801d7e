#!/usr/bin/env bash
# Build the documentation site offline into _docs/ and check it; then open _docs/index.html in a browser.
# 1. nbdev's own docs processing (what `nbdev_docs` runs before Quarto) must succeed on every notebook;
# 2. every notebook is executed (the cells nbdev_test runs; `#| slow` cells are shown without outputs);
# 3. MkDocs with mkdocs-jupyter renders the executed notebooks, MathJax served from the site itself;
# 4. checks: each notebook has its page, each page holds its figures, links resolve, nothing loads from the
#    network, and, with Debian's chromium installed, formulas typeset in a headless browser (screenshots in
#    _docs/_screens/).
# About 10 minutes on 2 CPU cores. With internet, `nbdev_docs` builds the Quarto version from nbs/_quarto.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev,docs]"
.venv/bin/python tools/docs.py nbdev --workers "${DOCS_WORKERS:-2}"
.venv/bin/python tools/docs.py stage --workers "${DOCS_WORKERS:-2}"
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --quiet --clean -f tools/mkdocs.yml
.venv/bin/python tools/docs.py check
