"""README.md from nbs/index.ipynb: the tour's prose, its code and what the code printed and drew.

nbdev's `nbdev_readme` renders the README notebook (settings.ini `readme_nb`) with Quarto, which needs internet;
this script does the same offline. It runs the notebook's cells (those `nbdev_test` runs), writes README.md and
saves the figures under nbs/assets/readme/. Edit the notebook, then run:

    python tools/make_readme.py            # about a minute on a CPU
    python tools/make_readme.py --check    # is README.md up to date with the notebook's text? (no execution)
"""
import argparse, base64, os, re, sys
from pathlib import Path

from docs import SKIP_FLAGS, run_cells  # the docs build's skips and way of running a notebook

ROOT = Path(__file__).resolve().parents[1]
NB, README, FIGURES = ROOT / "nbs" / "index.ipynb", ROOT / "README.md", ROOT / "nbs" / "assets" / "readme"
DIRECTIVE = re.compile(r"^#\|\s*(.*)$", re.M)
NOTICE = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->"


def directives(source: str) -> set[str]:
    return {d.split()[0] for d in DIRECTIVE.findall(source) if d.split()}


def shown_code(source: str) -> str:
    return DIRECTIVE.sub("", source).strip("\n")


def root_links(markdown: str) -> str:
    "Links written from nbs/ made relative to the repository root, where README.md lives."
    def from_root(m):
        target = m[1]
        if re.match(r"[a-z]+:|#|/", target): return m[0]  # web addresses and anchors stay
        if target.startswith("../"): return f"]({target[3:]})"
        return "](nbs/)" if target == "." else f"](nbs/{target})"
    return re.sub(r"\]\(([^)]+)\)", from_root, markdown)


def _runs(cell) -> bool:
    src = cell.source
    return cell.cell_type == "code" and "eval: false" not in src and not (SKIP_FLAGS & directives(src))


def _fence(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def _shown(cells):
    "Each cell a reader sees, with its text for README: prose as it is, code fenced without nbdev's directives."
    for cell in cells:
        if cell.cell_type == "markdown": yield cell, root_links(cell.source.strip("\n"))
        elif cell.cell_type == "code" and "hide" not in directives(cell.source) and shown_code(cell.source):
            yield cell, _fence(shown_code(cell.source), "python")


def render(cells, save_figure=None) -> str:
    "Markdown for README from notebook cells; `save_figure(png_bytes) -> path` is called for each figure shown."
    blocks = [NOTICE]
    for cell, text in _shown(cells):
        blocks.append(text)
        for out in cell.get("outputs", []) if save_figure and cell.cell_type == "code" else []:
            data = out.get("data", {})
            if out.get("output_type") == "stream" and out.get("name") == "stdout": blocks.append(_fence("".join(out["text"])))
            elif "image/png" in data: blocks.append(f"![]({save_figure(base64.b64decode(data['image/png']))})")
            elif "text/plain" in data and "text/html" not in data: blocks.append(_fence("".join(data["text/plain"])))
    return "\n\n".join(blocks) + "\n"


def executed_cells():
    "The notebook's cells after running them in nbs/, as nbdev_test would."
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    nb = read_nb(NB)
    run_cells(CaptureShell(NB, mpl_format="png"), nb, NB, skip=lambda c: not _runs(c))
    return nb.cells


def write() -> None:
    import shutil
    cells = executed_cells()
    shutil.rmtree(FIGURES, ignore_errors=True); FIGURES.mkdir(parents=True)
    count = 0

    def save(png: bytes) -> str:
        nonlocal count
        count += 1
        path = FIGURES / f"figure_{count}.png"
        path.write_bytes(png)
        return path.relative_to(ROOT).as_posix()

    README.write_text(render(cells, save))
    print(f"wrote {README.relative_to(ROOT)} with {count} figures in {FIGURES.relative_to(ROOT)}/")


def stale_parts(readme: str, cells) -> list[str]:
    "Text of the notebook (prose and code) that README.md lacks, in order: empty when it is up to date."
    missing, pos = [], 0
    for _, block in _shown(cells):
        at = readme.find(block, pos)
        if at < 0: missing.append(block[:80])
        else: pos = at + len(block)
    return missing


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that README.md holds the notebook's text")
    if ap.parse_args().check:
        from execnb.nbio import read_nb
        missing = stale_parts(README.read_text(), read_nb(NB).cells)
        for m in missing: print("README.md lacks:", m)
        sys.exit(f"README.md is out of date with nbs/index.ipynb: run python tools/make_readme.py" if missing else 0)
    write()
