"""The offline docs site and the README generator (tools/): link rewriting, the page checks, README in sync.

Building the whole site executes every notebook (minutes), so CI checks the pieces here and `bash tools/build_docs.sh`
checks the built site itself.
"""
import base64, json, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docs, make_readme  # noqa: E402


def test_notebook_links_become_page_links():
    md = "see [k-means](09_kmeans.ipynb#pnmi), [tour](index.ipynb), [the file](../benchmarks/results/x_2026.md) and [f](https://a.b/c.ipynb)"
    assert docs.html_links(md) == ("see [k-means](09_kmeans.html#pnmi), [tour](index.html), "
                                   "[the file](benchmarks/results/x_2026.html) and [f](https://a.b/c.ipynb)")


def test_readme_links_are_relative_to_the_root():
    md = "[k-means](09_kmeans.ipynb), [r](../benchmarks/results/a.md), [web](https://x.y/z), [here](#two-commands), [nbs](.)"
    assert make_readme.root_links(md) == ("[k-means](nbs/09_kmeans.ipynb), [r](benchmarks/results/a.md), "
                                          "[web](https://x.y/z), [here](#two-commands), [nbs](nbs/)")


def _nb(n_images: int, markdown: str = "text") -> dict:
    png = base64.b64encode(b"\x89PNG fake").decode()
    outputs = [{"output_type": "display_data", "data": {"image/png": png}, "metadata": {}}] * n_images
    return {"cells": [{"cell_type": "markdown", "source": [markdown], "metadata": {}},
                      {"cell_type": "code", "source": ["plot()"], "outputs": outputs, "metadata": {}}]}


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "SITE", tmp_path / "site"); monkeypatch.setattr(docs, "SRC", tmp_path / "src")
    (tmp_path / "site").mkdir(); (tmp_path / "src").mkdir()
    return tmp_path


def _page(site, name, html, nb):
    (site / "site" / f"{name}.html").write_text(html)
    (site / "src" / f"{name}.ipynb").write_text(json.dumps(nb))
    return site / "site" / f"{name}.html", site / "src" / f"{name}.ipynb"


def test_page_check_passes_a_complete_page(site):
    img = '<img alt="" src="data:image/png;base64,AAAA"/>'
    (site / "site" / "02_data.html").write_text("<p>next</p>")
    page, nb = _page(site, "01_corpus", f'<a href="02_data.html#x">next</a>{img}{img}', _nb(2))
    assert docs.check_page(page, nb) == []


def test_page_check_names_what_a_reader_would_miss(site):
    html = ('<script src="https://cdn.example.org/mathjax.js"></script><a href="03_features.html">next</a>'
            '<img src="data:image/png;base64,AAAA"/>')
    page, nb = _page(site, "01_corpus", html, _nb(2, "the loss $L = -\\log p$"))
    problems = docs.check_page(page, nb)
    assert any("1 figures shown of the 2" in p for p in problems)
    assert any("loads from the network" in p for p in problems)
    assert any("broken link to 03_features.html" in p for p in problems)
    assert any("no local MathJax" in p for p in problems)
    assert docs.check_page(site / "site" / "nothing.html", nb) == [f"nothing.html: missing (no page for {nb.name})"]


def test_math_detection_ignores_code_and_prices():
    assert docs.has_math(_nb(0, "ratio $\\frac{a}{b}$"))
    assert not docs.has_math(_nb(0, "`x = '$'` costs 5 $ or `$HOME`"))


def test_readme_is_generated_from_the_tour():
    from execnb.nbio import read_nb
    missing = make_readme.stale_parts((ROOT / "README.md").read_text(), read_nb(make_readme.NB).cells)
    assert missing == [], "README.md is out of date with nbs/index.ipynb: run python tools/make_readme.py"


def test_readme_links_resolve():
    import re
    text = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text) if not t.startswith(("http", "#"))]
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []
