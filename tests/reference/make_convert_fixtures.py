"""Write tiny icefall k2SSL checkpoints, made by icefall's own code, and their outputs, for tests/test_convert.py.

Usage: python tests/reference/make_convert_fixtures.py --icefall DIR
where DIR holds an extracted icefall tree at commit 36e0420 with at least egs/librispeech/SSL,
egs/librispeech/ASR/zipformer (the SSL recipe links to it) and icefall/checkpoint.py, e.g.
`git archive 36e0420 egs/librispeech/SSL egs/librispeech/ASR/zipformer icefall/checkpoint.py | tar -x -C DIR`.

For each of the two k2SSL recipes (SSL/zipformer: the Zipformer model; SSL/hubert: HuBERT-CE), this builds the
recipe's HubertModel from arguments parsed by the recipe's own argument function (add_model_arguments in
zipformer/pretrain.py, add_hubert_arguments in hubert/hubert_ce.py) with tiny sizes, moves every tensor off its
initial value, and saves it with icefall.checkpoint.save_checkpoint and the run's parameters, as a training run
does: those files hold pathlib.Path values, like real ones. The reference outputs (the encoder output of
extract_features, the head's logits and, for HuBERT-CE, the output of layer 1; eval mode; unpadded waveforms of 50
and 64 frames, 50 not being a multiple of the deepest stack's factor 8) go to convert_icefall_ref.pt, plain tensors.
k2 is not needed: its swoosh kernels are replaced by their closed-form formulas; icefall.utils is stubbed with the
names the models use.
"""
import argparse
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

ICEFALL_COMMIT = "36e0420c7e3e849a25b3d24dbf913c424f3d23c9"
OUT = Path(__file__).resolve().parent.parent / "fixtures"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from icefall_anchors import function_from, str2bool, swoosh_k2  # noqa: E402  shared with the step benchmark
CNN = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
ZIPFORMER_ARGS = ["--num-encoder-layers", "1,1,2,1,1,1", "--downsampling-factor", "1,2,4,8,4,2",
                  "--feedforward-dim", "16,20,24,32,24,20", "--num-heads", "2,2,2,2,2,2",
                  "--encoder-dim", "12,16,20,24,20,16", "--query-head-dim", "4", "--value-head-dim", "3",
                  "--pos-head-dim", "2", "--pos-dim", "16", "--encoder-unmasked-dim", "8,8,12,12,12,8",
                  "--cnn-module-kernel", "5,5,3,3,3,5", "--conv-feature-layers", CNN, "--num-classes", "20",
                  "--logit-temp", "0.1"]
HUBERT_ARGS = ["--encoder-layers", "2", "--encoder-embed-dim", "48", "--encoder-ffn-embed-dim", "96",
               "--encoder-attention-heads", "4", "--conv-pos", "16", "--conv-pos-groups", "4",
               "--conv-feature-layers", CNN, "--num-classes", "20", "--final-dim", "16"]
LENGTHS = (16123, 20560)  # samples: 50 and 64 frames at 50 Hz


class AttributeDict(dict):  # the behaviour of icefall.utils.AttributeDict that the models use
    def __getattr__(self, key):
        try: return self[key]
        except KeyError: raise AttributeError(key) from None
    def __setattr__(self, key, value): self[key] = value


def _stub_modules(root: Path):
    "k2's swoosh kernels as closed-form formulas; icefall.utils and encoder_interface with the names used."
    k2 = swoosh_k2()
    icefall = types.ModuleType("icefall"); icefall.__path__ = [str(root / "icefall")]  # icefall.checkpoint is real
    utils = types.ModuleType("icefall.utils")
    utils.torch_autocast = lambda enabled=True, **kw: torch.autocast("cpu", enabled=False)
    utils.AttributeDict, utils.str2bool = AttributeDict, str2bool
    icefall.utils = utils
    ei = types.ModuleType("encoder_interface"); ei.EncoderInterface = nn.Module
    sys.modules.update({"k2": k2, "icefall": icefall, "icefall.utils": utils, "encoder_interface": ei})


def _recipe(root: Path, recipe: str):
    "Import a recipe's modules fresh (both recipes have a hubert_ce, utils and wav2vec2_module)."
    for m in ("hubert_ce", "utils", "wav2vec2_module", "scaling", "zipformer", "attention_module"):
        sys.modules.pop(m, None)
    d = root / "egs" / "librispeech" / "SSL" / recipe
    sys.path.insert(0, str(d))
    import hubert_ce  # noqa: E402  (the recipe's model)
    sys.path.remove(str(d))
    return d, hubert_ce


def _perturb(model: nn.Module, seed: int):
    "Move every tensor away from its initial value, so that a wrong mapping of any one of them shows."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.05 * torch.randn(p.shape, generator=g) * (p.abs().mean() + 0.1))


def _params(args: argparse.Namespace, recipe: str) -> AttributeDict:
    "The run's params as the recipe's get_params + vars(args) make them (the entries save_checkpoint stores)."
    params = AttributeDict({"best_train_loss": float("inf"), "best_valid_loss": float("inf"), "best_train_epoch": -1,
                            "best_valid_epoch": -1, "batch_idx_train": 1000, "sub_batch_idx_train": 1000,
                            "log_interval": 50, "reset_interval": 200, "valid_interval": 3000,
                            "env_info": {"icefall-git-sha1": ICEFALL_COMMIT[:7], "recipe": recipe}})
    params.update(vars(args))
    params.update(exp_dir=Path(f"{recipe}/exp"), manifest_dir=Path("data/fbank"), do_normalize=True)
    return params


def _outputs(model, waves: torch.Tensor, recipe: str) -> dict:
    model.eval()
    pad = torch.zeros(waves.shape, dtype=torch.bool)
    with torch.no_grad():
        x, _ = model.extract_features(waves, padding_mask=pad, mask=False)
        out = {"waves": waves, "x": x, "logits": model.final_proj(x) / model.logit_temp}
        if recipe == "hubert":  # the features fairseq-style k-means dumps read: output_layer=1 (1-based)
            out["layer1"] = model.extract_features(waves, padding_mask=pad, mask=False, output_layer=1)[0]
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--icefall", type=Path, required=True)
    root = p.parse_args().icefall.resolve()
    if not (root / "egs/librispeech/SSL/zipformer/hubert_ce.py").exists(): sys.exit(f"no icefall tree at {root}")
    _stub_modules(root)
    from icefall.checkpoint import save_checkpoint  # icefall's own writer
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(2 if n == LENGTHS[0] else 1, n, generator=g) for n in LENGTHS]
    ref = {"icefall_commit": ICEFALL_COMMIT}
    for recipe, fn_file, fn_name, argv in (("zipformer", "pretrain.py", "add_model_arguments", ZIPFORMER_ARGS),
                                          ("hubert", "hubert_ce.py", "add_hubert_arguments", HUBERT_ARGS)):
        d, hubert_ce = _recipe(root, recipe)
        parser = argparse.ArgumentParser()
        function_from(d / fn_file, fn_name)(parser)
        params = _params(parser.parse_args(argv), recipe)
        torch.manual_seed(1)
        model = hubert_ce.HubertModel(params)
        _perturb(model, 2)
        model.eval()
        # icefall layer_norms the waveform in the data pipeline when do_normalize is set: so do we, before the model
        normed = [torch.nn.functional.layer_norm(w, w.shape[-1:]) for w in waves]
        ref[recipe] = [_outputs(model, w, recipe) for w in normed]
        for r, w in zip(ref[recipe], waves): r["waves"] = w  # the raw waveform; normalising is the converted model's job
        save_checkpoint(OUT / f"convert_icefall_{recipe}.pt", model, params=params)
        print(recipe, sum(p.numel() for p in model.parameters()), "parameters;",
              [tuple(r["x"].shape) for r in ref[recipe]])
    torch.save(ref, OUT / "convert_icefall_ref.pt")


if __name__ == "__main__":
    main()
