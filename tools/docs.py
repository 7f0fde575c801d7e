"""The offline documentation site: execute every notebook, hand the executed copies to MkDocs, check the pages.

nbdev's own route (`nbdev_docs`) renders with Quarto, which it downloads; where there is no network this script
builds the same notebooks with MkDocs, mkdocs-material and mkdocs-jupyter, all from PyPI, with MathJax served
from the site itself. `tools/build_docs.sh` runs the three steps:

    python tools/docs.py stage   # nbs/*.ipynb -> _docs_src/*.ipynb, executed, nbdev directives applied
    mkdocs build -f tools/mkdocs.yml   # _docs_src/ -> _docs/
    python tools/docs.py nbdev   # nbdev's own docs processing (what nbdev_docs runs before Quarto) succeeds
    python tools/docs.py check   # every notebook has its page, each page holds its figures, nothing remote
"""
import argparse, json, multiprocessing, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, SRC, SITE = ROOT / "nbs", ROOT / "_docs_src", ROOT / "_docs"
SKIP_FLAGS = {"slow", "notest"}  # what nbdev_test skips (settings.ini tst_flags): minutes-long cells
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
NOTEBOOK_LINK = re.compile(r"\]\(([A-Za-z0-9_]+)\.ipynb(#[^)]*)?\)")


def notebooks() -> list[Path]:
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))


def page_name(nb: Path) -> str:
    return nb.stem + ".html"


def html_links(markdown: str) -> str:
    """Links between notebooks become links between pages: `[x](09_kmeans.ipynb#a)` -> `[x](09_kmeans.html#a)`;
    links out of nbs/ (`../benchmarks/results/...`) point into the site's copy, where Markdown files are pages."""
    markdown = NOTEBOOK_LINK.sub(lambda m: f"]({m[1]}.html{m[2] or ''})", markdown)
    markdown = re.sub(r"\]\(\.\./([^)#]+?)\.md(#[^)]*)?\)", lambda m: f"]({m[1]}.html{m[2] or ''})", markdown)
    return re.sub(r"\]\(\.\./", "](", markdown).replace("](.)", "](index.html)")


DIRECTIVE = re.compile(r"^#\|.*\n?", re.M)
FRONTMATTER = re.compile(r"^---\n")


def title_cell(frontmatter: dict):
    "nbdev reads a notebook's `# Title` and `> description` into front matter; the page shows them again."
    from execnb.nbio import mk_cell
    text = f"# {frontmatter.get('title', '')}"
    if frontmatter.get("description"): text += f"\n\n> {frontmatter['description']}"
    return mk_cell(text, "markdown")


def _skipped(cell) -> bool:
    directives = getattr(cell, "directives_", {}) or {}
    if directives.get("eval:", [""])[0].lower() == "false": return True
    return bool(SKIP_FLAGS & directives.keys())


def _for_reader(cell) -> bool:
    "nbdev's `#| hide` cells run but are not shown."
    return "hide" not in (getattr(cell, "directives_", {}) or {})


def run_cells(shell, nb, nb_path: Path, skip) -> None:
    "Run `nb`'s cells in `shell` from the notebook's folder, as nbdev_test does, but those where `skip(cell)`."
    cwd = os.getcwd(); os.chdir(nb_path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=skip)
    finally: os.chdir(cwd)


def execute(nb_path: Path) -> tuple[str, float, str]:
    "Run one notebook as `nbdev_test` does (same skips, in nbs/) and write its executed, reader's copy to _docs_src/."
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from execnb.nbio import write_nb
    from execnb.shell import CaptureShell
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor

    start = time.time()
    nb = NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb  # also strips the `#|` lines into directives_
    shell, error = CaptureShell(nb_path), ""
    try: run_cells(shell, nb, nb_path, skip=lambda c: c.cell_type != "code" or _skipped(c))
    except Exception: error = shell.prettytb(fname=nb_path)
    for cell in nb.cells:
        if cell.cell_type == "markdown": cell.source = html_links(cell.source)
        if cell.cell_type != "code": continue
        cell.source = DIRECTIVE.sub("", cell.source).strip("\n")
        if _skipped(cell): cell.outputs = []
    nb.cells = [title_cell(getattr(nb, "frontmatter_", {}) or {})] + [
        c for c in nb.cells if _for_reader(c) and c.source.strip() and not FRONTMATTER.match(c.source)]
    write_nb(nb, SRC / nb_path.name)
    return nb_path.name, time.time() - start, error


def stage(workers: int) -> None:
    if SRC.exists(): shutil.rmtree(SRC)
    SRC.mkdir()
    shutil.copytree(NBS / "assets", SRC / "assets", ignore=shutil.ignore_patterns("*.pt", "*.npy", "*.pkl", "*.md"))
    mathjax = Path(__import__("jupyter_server_mathjax").__file__).parent / "static"
    shutil.copytree(mathjax, SRC / "assets" / "mathjax")
    shutil.copytree(ROOT / "benchmarks" / "results", SRC / "benchmarks" / "results")  # the figures the prose cites
    (SRC / "assets" / "extra.css").write_text((ROOT / "tools" / "docs_extra.css").read_text())
    failed = []
    # A fresh process per notebook, as nbdev_test gives: IPython takes over `__main__` and notebooks set globals.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        for name, seconds, error in pool.map(execute, notebooks()):
            print(f"{'FAILED' if error else 'ran':>6}  {name:<24} {seconds:6.1f} s", flush=True)
            if error: failed.append((name, error))
    for name, error in failed: print(f"\n{name}:\n{error}", file=sys.stderr)
    if failed: sys.exit(f"{len(failed)} notebook(s) failed to run: {', '.join(n for n, _ in failed)}")


def nbdev_processing(workers: int) -> None:
    """Run nbdev's own docs processing (what `nbdev_docs` does before Quarto renders) on every notebook: it runs
    each notebook's import and export cells on their own, so a cell that mixes imports with other code fails here."""
    from nbdev.serve import proc_nbs
    proc_nbs(str(NBS), n_workers=workers, force=True)
    missing = [nb.name for nb in notebooks() if not (ROOT / "_proc" / nb.name).exists()]
    if missing: sys.exit(f"nbdev's docs processing left out: {', '.join(missing)}")
    print(f"nbdev docs processing: {len(notebooks())} notebooks processed into _proc/")


def _images(nb: dict) -> int:
    return sum(any(t in o.get("data", {}) for t in IMAGE_TYPES)
               for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


LOCAL = re.compile(r"^(?:[a-z]+:|//)")  # links that are not files of the site: http:, data:, mailto:, ...


def has_math(nb: dict) -> bool:
    "Does any markdown cell hold TeX (`$...$` outside code spans)?"
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return bool(re.search(r"\$[^$`\n]+\$", re.sub(r"`[^`]*`", "", text)))


REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//", re.I)


def check_page(page: Path, staged: Path) -> list[str]:
    "What a reader would miss on `page`, the rendering of the executed notebook `staged`."
    if not page.exists(): return [f"{page.name}: missing (no page for {staged.name})"]
    html, nb = page.read_text(), json.loads(staged.read_text())
    problems, want = [], _images(nb)
    got = len(re.findall(r"<img\b[^>]*src=[\"']data:image/(?:png|jpeg)", html)) + html.count("jp-RenderedSVG")
    if got < want: problems.append(f"{page.name}: {got} figures shown of the {want} its notebook made")
    for m in REMOTE.finditer(html): problems.append(f"{page.name}: loads from the network: {m[0][:90]}")
    for target in re.findall(r"\b(?:href|src)=[\"']([^\"'#?]+)", html):
        if not LOCAL.match(target) and not (page.parent / target).exists():
            problems.append(f"{page.name}: broken link to {target}")
    if has_math(nb) and "assets/mathjax/MathJax.js" not in html:
        problems.append(f"{page.name}: has math but no local MathJax")
    return problems


def browser_check(pages: list[str]) -> list[str]:
    "Render pages in headless Chromium: MathJax typesets, and a screenshot of each lands in _docs/_screens/."
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("browser check skipped: no chromium (Debian: apt-get install chromium)")
        return []
    shots, problems = SITE / "_screens", []
    shots.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=8000", "--user-data-dir=" + str(SITE / "_screens" / ".profile")]
    for name in pages:
        url = (SITE / name).as_uri()
        dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        png = shots / name.replace(".html", ".png")
        subprocess.run([chromium, *flags, "--window-size=1280,1600", f"--screenshot={png}", url],
                       capture_output=True, timeout=120)
        typeset = len(re.findall(r'id="MathJax-Element-\d+-Frame"', dom))
        print(f"browser  {name:<24} {typeset:4d} typeset formulas, screenshot {png.relative_to(ROOT)}")
        if has_math(json.loads((SRC / name.replace(".html", ".ipynb")).read_text())) and typeset == 0: problems.append(f"{name}: MathJax did not typeset")
        if not png.exists() or png.stat().st_size < 10_000: problems.append(f"{name}: blank or missing screenshot")
    shutil.rmtree(shots / ".profile", ignore_errors=True)
    return problems


def check(browser_pages: list[str]) -> None:
    problems = []
    for nb in notebooks():
        problems += check_page(SITE / page_name(nb), SRC / nb.name)
        print(f"page     {page_name(nb):<24} {_images(json.loads((SRC / nb.name).read_text())):3d} figures")
    problems += browser_check(browser_pages)
    for p in problems: print("PROBLEM", p)
    if problems: sys.exit(f"docs check: {len(problems)} problem(s)")
    print(f"docs check passed: {len(notebooks())} pages in {SITE.relative_to(ROOT)}/, open {SITE.relative_to(ROOT)}/index.html")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("stage").add_argument("--workers", type=int, default=2)
    sub.add_parser("nbdev").add_argument("--workers", type=int, default=2)
    sub.add_parser("check").add_argument("--browser", nargs="*", default=["index.html", "04_masking.html", "10_optim.html"])
    args = ap.parse_args()
    {"stage": lambda: stage(args.workers), "nbdev": lambda: nbdev_processing(args.workers),
     "check": lambda: check(args.browser)}[args.step]()
