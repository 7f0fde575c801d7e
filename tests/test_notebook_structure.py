"""The notebooks read as a book: in order, with imports in cells of their own, and without references a reader
cannot follow (documents outside the repository, issue-tracker language)."""
import ast, json, re
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def module_of() -> dict[str, str]:
    "Exported module name -> the notebook that defines it."
    out = {}
    for nb in NOTEBOOKS:
        for c in cells(nb):
            m = re.search(r"#\|\s*default_exp\s+(\w+)", source(c))
            if m: out[m.group(1)] = nb.name
    return out


def test_no_notebook_imports_a_later_one():
    modules, order = module_of(), [nb.name for nb in NOTEBOOKS if nb.name != "index.ipynb"]
    position = {name: i for i, name in enumerate(order)}
    later = []
    for nb in NOTEBOOKS:
        if nb.name == "index.ipynb": continue  # the tour comes first but shows the whole pipeline
        for c in cells(nb):
            for m in re.finditer(r"(?:from|import)\s+k2ssl_lit\.(\w+)", source(c)):
                home = modules.get(m.group(1))
                if home is not None and position[home] > position[nb.name]: later.append(f"{nb.name} imports {home}")
    assert not later, later


def _directives(src: str) -> str:
    return " ".join(l for l in src.splitlines() if l.startswith("#|"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_have_cells_of_their_own(nb):
    "nbdev's docs processing runs every cell that imports something on its own: such a cell must hold only imports."
    mixed = []
    for i, c in enumerate(cells(nb)):
        src = source(c)
        if c["cell_type"] != "code" or "nbdev_export()" in src: continue
        if any(d in _directives(src) for d in ("export", "exec_doc", "eval: false")): continue
        try: tree = ast.parse(src)
        except SyntaxError: continue  # IPython magics: none of ours mix them with imports
        nodes = list(ast.walk(tree))
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and \
           any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes):
            mixed.append(f"cell {i}: {src.splitlines()[0][:60]}")
    assert not mixed, mixed


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_references_outside_the_repository(nb):
    bad = [m.group(0) for c in cells(nb) for m in re.finditer(r"DESIGN\.md|DESIGN §|STYLE\.md|\bissue \d+\b", source(c))]
    assert not bad, bad
