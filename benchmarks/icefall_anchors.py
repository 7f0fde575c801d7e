"""The k2SSL recipes' own pre-training models, built from an icefall tree kept outside this repository, as anchors for
benchmarks/step.py (`--icefall DIR --models icefall_hubert,icefall_zipformer,...`). No icefall code is committed here.

  icefall_zipformer  egs/librispeech/SSL/zipformer: hubert_ce.HubertModel with the Zipformer2 encoder, Base sizes (the
                     defaults of pretrain.py's add_model_arguments), batch count 100000 (steady state)
  icefall_hubert     egs/librispeech/SSL/hubert: hubert_ce.HubertModel (HuBERT Base, CE head), the defaults of
                     hubert_ce.py's add_hubert_arguments

Both are built from arguments parsed by the recipe's own argument function and run their own forward (masking, CE on
masked frames, feature penalty), as the recipe's compute_loss calls it. k2 is used when it imports; otherwise its
swoosh kernels are replaced by their closed-form torch formulas (k2 is not on PyPI): the source column of step.py says
which. icefall.utils and encoder_interface are stubbed with the names the models use (torch_autocast keeps icefall's
meaning: torch.amp.autocast, device "cuda" unless given).

The tree, at the commit the tests' fixtures were made from (about 2 MB; the SSL recipe links files of ASR/zipformer):

    git clone https://github.com/k2-fsa/icefall && mkdir -p .dev/icefall
    git -C icefall archive 36e0420 egs/librispeech/SSL egs/librispeech/ASR/zipformer | tar -x -C .dev/icefall
    python benchmarks/step.py --icefall .dev/icefall --models icefall_hubert,hubert,icefall_zipformer,zipformer

(.dev/ is git-ignored; benchmarks/gpu_check.py looks there by default.)
"""
from __future__ import annotations
import argparse, ast, sys, types
from pathlib import Path

ICEFALL_COMMIT = "36e0420c7e3e849a25b3d24dbf913c424f3d23c9"
RECIPES = {  # model name -> (recipe folder under egs/librispeech/SSL, file with the argument function, its name)
    "icefall_zipformer": ("zipformer", "pretrain.py", "add_model_arguments"),
    "icefall_hubert": ("hubert", "hubert_ce.py", "add_hubert_arguments"),
}


def recipe_dir(root, recipe: str) -> Path:
    d = Path(root).resolve() / "egs" / "librispeech" / "SSL" / recipe
    if not (d / "hubert_ce.py").exists():
        raise FileNotFoundError(f"{d}/hubert_ce.py not found: --icefall must name an icefall tree holding egs/librispeech/SSL")
    return d


def str2bool(v):
    if isinstance(v, bool): return v
    return v.lower() in ("yes", "true", "t", "y", "1")


def swoosh_k2() -> types.ModuleType:
    "A stand-in `k2` module whose swoosh kernels are their closed-form torch formulas (k2 is not on PyPI)."
    import torch
    k2 = types.ModuleType("k2")
    def fwd(shift, offset): return lambda x: torch.logaddexp(torch.zeros_like(x), x - shift) - 0.08 * x - offset
    def fwd_deriv(shift, offset): return lambda x: (fwd(shift, offset)(x), torch.sigmoid(x - shift) - 0.08)
    k2.swoosh_l = k2.swoosh_l_forward = fwd(4.0, 0.035)
    k2.swoosh_r = k2.swoosh_r_forward = fwd(1.0, 0.313261687)
    k2.swoosh_l_forward_and_deriv = fwd_deriv(4.0, 0.035)
    k2.swoosh_r_forward_and_deriv = fwd_deriv(1.0, 0.313261687)
    return k2


def _stub_modules() -> str:
    "k2 (the real one if it imports, else closed-form swoosh), icefall.utils and encoder_interface; returns which k2."
    import torch
    import torch.nn as nn
    try:
        import k2  # noqa: F401
        k2_source = "k2 kernels"
    except ImportError:
        sys.modules["k2"] = swoosh_k2()
        k2_source = "k2 swoosh as torch formulas"
    icefall = sys.modules.get("icefall") or types.ModuleType("icefall")
    utils = types.ModuleType("icefall.utils")
    utils.torch_autocast = lambda device_type="cuda", **kw: torch.amp.autocast(device_type=device_type, **kw)
    utils.str2bool = str2bool
    icefall.utils = utils
    ei = types.ModuleType("encoder_interface"); ei.EncoderInterface = nn.Module
    sys.modules.update({"icefall": icefall, "icefall.utils": utils, "encoder_interface": ei})
    return k2_source


def function_from(path: Path, name: str):
    "One top-level function of a recipe file, compiled alone (the file's other imports need a training setup)."
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    ns = {"argparse": argparse, "str2bool": str2bool}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), ns)
    return ns[name]


def build(name: str, root, num_classes: int):
    "The recipe's HubertModel for `name` with its default (Base) arguments and `num_classes` labels; and the k2 source."
    recipe, arg_file, arg_fn = RECIPES[name]
    d = recipe_dir(root, recipe)
    k2_source = _stub_modules()
    for m in ("hubert_ce", "utils", "wav2vec2_module", "scaling", "zipformer", "attention_module"):
        sys.modules.pop(m, None)  # both recipes have a hubert_ce, utils and wav2vec2_module
    sys.path.insert(0, str(d))
    try:
        import hubert_ce  # the recipe's model
    finally:
        sys.path.remove(str(d))
    parser = argparse.ArgumentParser()
    function_from(d / arg_file, arg_fn)(parser)
    params = parser.parse_args(["--num-classes", str(num_classes)])
    return hubert_ce.HubertModel(params), k2_source


def set_batch_count(model, batch_count: float):
    "What the recipe's pretrain.py does before each batch: every module with a batch_count gets the count."
    for name, module in model.named_modules():
        if hasattr(module, "batch_count"): module.batch_count = batch_count
        if hasattr(module, "name"): module.name = name


class IcefallStep:
    "One recipe model with the loss its forward computes (CE on masked frames + feature penalty), per masked frame."
    def __init__(self, name: str, root, num_classes: int):
        self.model, k2_source = build(name, root, num_classes)
        self.source, self.note = "icefall", f"icefall: recipe code at {ICEFALL_COMMIT[:7]}, {k2_source}"
        if name == "icefall_zipformer": set_batch_count(self.model, 100_000.0)
        self.parts = dict(frontend=self.model.feature_extractor, encoder=self.model.encoder, head=self.model.final_proj)

    def loss(self, wav, lens, labels):
        import torch
        pad = torch.arange(wav.shape[1], device=wav.device)[None] >= lens[:, None]
        loss, masked, _ = self.model(source=wav, target_list=[labels], padding_mask=pad)
        return loss / max(int(masked), 1)
