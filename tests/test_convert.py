"""k2ssl-convert: every source against its own library's forward pass (or icefall's recorded outputs), safe loading,
and the converted files in the tools downstream."""
import argparse, enum, subprocess, sys, types
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio
from sklearn.cluster import MiniBatchKMeans
from torchaudio.models.wav2vec2.utils.import_fairseq import _map_key

from k2ssl_lit.convert import PickleRefused, StandIn, convert, detect_source, plain, read_file
from k2ssl_lit.kmeans import KMeansLabeler, load_layer_features
from k2ssl_lit.presets import load_checkpoint, load_pretrained

FIXTURES = Path(__file__).parent / "fixtures"
N = 8000  # samples: 24 frames


def rel(a, b): return float((a - b).abs().max() / b.abs().max())


def tiny_torchaudio(extractor_mode="group_norm", conv_bias=False, layer_norm_first=False, layers=3, seed=0):
    "A small torchaudio HuBERTPretrainModel, every norm and bias moved off its initial value."
    torch.manual_seed(seed)
    m = torchaudio.models.hubert_pretrain_model(
        extractor_mode=extractor_mode, extractor_conv_layer_config=[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2,
        extractor_conv_bias=conv_bias, encoder_embed_dim=48, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4, encoder_num_layers=layers, encoder_num_heads=4, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=96, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=layer_norm_first, encoder_layer_drop=0.0, mask_prob=0.8, mask_selection="static",
        mask_other=0.0, mask_length=10, no_mask_overlap=False, mask_min_space=1, mask_channel_prob=0.0,
        mask_channel_selection="static", mask_channel_other=0.0, mask_channel_length=10, no_mask_channel_overlap=False,
        mask_channel_min_space=1, skip_masked=False, skip_nomask=False, num_classes=20, final_dim=16,
        feature_grad_mult=None).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"): p.add_(0.1 * torch.randn_like(p))
    return m


def class_logits(ta, x, labels):
    "All-class logits of torchaudio's LogitGenerator (its column 0 is the true class's; put it back in place)."
    every = torch.ones(labels.shape, dtype=torch.bool)
    with torch.no_grad(): _, lu = ta.logit_generator(x, labels, ~every, every)
    full = lu[:, 1:].clone()
    full[torch.arange(len(full)), labels.flatten()] = lu[:, 0]
    return full


def check_against_torchaudio(model, ta, waves):
    "Every layer and the head of a converted model against the torchaudio model (1e-4 relative)."
    src = F.layer_norm(waves, waves.shape[-1:]) if model.config.cnn.normalize_waveform else waves
    with torch.no_grad(): ref, _ = ta.wav2vec2.extract_features(src)
    lens = torch.full((len(waves),), waves.shape[1])
    for layer in range(1, len(ref) + 1):
        assert rel(model.extract(waves, lens, layer)[0], ref[layer - 1]) < 1e-4, layer
    x = ref[-1]
    labels = torch.randint(0, 20, x.shape[:2])
    with torch.no_grad(): assert rel(model.head(x).flatten(0, 1), class_logits(ta, x, labels)) < 1e-4


def fairseq_state(ta, extractor_mode="group_norm", conv_bias=False, prefix=""):
    "The fairseq names of a torchaudio HuBERTPretrainModel's tensors, found through torchaudio's fairseq importer map."
    wb = ("weight", "bias")
    names = []
    for i in range(7):
        names += [f"feature_extractor.conv_layers.{i}.0.{p}" for p in (wb if conv_bias else ("weight",))]
        if extractor_mode == "layer_norm": names += [f"feature_extractor.conv_layers.{i}.2.1.{p}" for p in wb]
    if extractor_mode == "group_norm": names += [f"feature_extractor.conv_layers.0.2.{p}" for p in wb]
    names += [f"{m}.{p}" for m in ("post_extract_proj", "layer_norm", "encoder.layer_norm") for p in wb]
    names += [f"encoder.pos_conv.0.{p}" for p in ("bias", "weight_g", "weight_v")]
    for i in range(len(ta.wav2vec2.encoder.transformer.layers)):
        names += [f"encoder.layers.{i}.{m}.{p}" for m in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj",
                  "self_attn.out_proj", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm") for p in wb]
    sd = {k.removeprefix("wav2vec2.").replace("parametrizations.weight.original0", "weight_g")
          .replace("parametrizations.weight.original1", "weight_v"): v for k, v in ta.state_dict().items()}
    out = {prefix + n: sd.pop(_map_key(n)) for n in names}
    for ours, theirs in (("mask_generator.mask_embedding", "mask_emb"), ("logit_generator.label_embeddings", "label_embs_concat"),
                         ("logit_generator.final_proj.weight", "final_proj.weight"), ("logit_generator.final_proj.bias", "final_proj.bias")):
        out[(prefix if theirs == "mask_emb" else "") + theirs] = sd.pop(ours)
    assert not sd, sorted(sd)
    return out


FS_MODEL = dict(encoder_attention_heads=4, layer_norm_first=False, logit_temp=0.1, mask_prob=0.8, feature_grad_mult=0.1,
                conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", dropout=0.1,
                attention_dropout=0.1, activation_dropout=0.0, encoder_layerdrop=0.05, extractor_mode="default")


@pytest.fixture(scope="module")
def waves(): return torch.randn(2, N, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("mode,bias,pre_ln", [("group_norm", False, False), ("layer_norm", True, True)])
def test_torchaudio_base_and_large_naming(tmp_path, waves, mode, bias, pre_ln):
    ta = tiny_torchaudio(mode, bias, pre_ln)
    torch.save(ta.state_dict(), tmp_path / "ta.pt")
    out = convert(tmp_path / "ta.pt", tmp_path / "ours.pt", num_heads=4)
    model = load_pretrained(out)  # weights_only=True
    assert (model.config.cnn.extractor_mode, model.config.cnn.conv_bias, model.config.hubert.layer_norm_first,
            model.config.cnn.normalize_waveform) == (mode, bias, pre_ln, mode == "layer_norm")
    check_against_torchaudio(model, ta, waves)
    # a Wav2Vec2Model (no head, no mask embedding): the encoder converts, the rest is reported as random
    torch.save(ta.wav2vec2.state_dict(), tmp_path / "encoder.pt")
    ckpt = load_checkpoint(convert(tmp_path / "encoder.pt", tmp_path / "enc.pt", num_heads=4, num_classes=7))
    assert ckpt["converted_from"]["random_parts"] == ["head", "mask_emb"] and ckpt["model_config"]["ssl"]["num_classes"] == 7


def test_torchaudio_needs_heads_for_unusual_width(tmp_path):
    torch.save(tiny_torchaudio().state_dict(), tmp_path / "ta.pt")
    with pytest.raises(ValueError, match="attention heads"): convert(tmp_path / "ta.pt", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("cfg_kind", ["namespace", "dict", "omegaconf_stand_in", "legacy_file"])
def test_fairseq_checkpoint(tmp_path, waves, cfg_kind):
    ta = tiny_torchaudio()
    ckpt = {"model": fairseq_state(ta), "optimizer_history": [], "extra_state": {}}
    if cfg_kind in ("namespace", "legacy_file"): ckpt.update(args=argparse.Namespace(**FS_MODEL, normalize=False), cfg=None)
    elif cfg_kind == "dict": ckpt.update(args=None, cfg={"model": FS_MODEL, "task": {"normalize": False}})
    else:  # omegaconf's DictConfig, from a module that is gone when the file is read (as omegaconf is not installed)
        mod = types.ModuleType("fake_omegaconf")
        class DictConfig:
            def __init__(self, content): self._content = content
        DictConfig.__module__, DictConfig.__qualname__, mod.DictConfig = "fake_omegaconf", "DictConfig", DictConfig
        mod.LAYER_TYPE = enum.Enum("LAYER_TYPE", {"transformer": "transformer", "conformer": "conformer"},
                                   module="fake_omegaconf", qualname="LAYER_TYPE")  # like fairseq's ChoiceEnum fields
        sys.modules["fake_omegaconf"] = mod
        model_cfg = DictConfig({**FS_MODEL, "layer_type": mod.LAYER_TYPE.transformer})
        ckpt.update(args=None, cfg=DictConfig({"model": model_cfg, "task": DictConfig({"normalize": False})}))
    path = tmp_path / "fairseq.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=cfg_kind != "legacy_file")
    sys.modules.pop("fake_omegaconf", None)
    if cfg_kind == "omegaconf_stand_in":
        with pytest.raises(PickleRefused, match="fake_omegaconf.DictConfig"): convert(path, tmp_path / "x.pt")
        cfg = read_file(path, trust_pickle=True)["cfg"]
        assert isinstance(cfg, StandIn) and plain(cfg)["model"]["layer_type"] == "transformer"
    out = convert(path, tmp_path / "ours.pt", trust_pickle=cfg_kind == "omegaconf_stand_in")
    model = load_pretrained(out)
    assert model.config.hubert.num_heads == 4 and model.config.ssl.feature_grad_mult == 0.1
    check_against_torchaudio(model, ta, waves)


def test_fairseq_large_and_finetuned(tmp_path, waves):
    ta = tiny_torchaudio("layer_norm", True, True)
    settings = {**FS_MODEL, "layer_norm_first": True, "extractor_mode": "layer_norm", "conv_bias": True}
    sd = fairseq_state(ta, "layer_norm", True)
    torch.save({"model": sd, "cfg": {"model": settings, "task": {"normalize": True}}}, tmp_path / "large.pt")
    check_against_torchaudio(load_pretrained(convert(tmp_path / "large.pt", tmp_path / "l.pt")), ta, waves)
    # fine-tuned: the encoder under w2v_encoder.w2v_model., a CTC output w2v_encoder.proj, pre-training settings in w2v_args
    ft = {"w2v_encoder." + ("w2v_model." + k if k not in ("label_embs_concat", "final_proj.weight", "final_proj.bias") else k): v
          for k, v in sd.items() if k not in ("label_embs_concat", "final_proj.weight", "final_proj.bias")}
    ft["w2v_encoder.proj.weight"], ft["w2v_encoder.proj.bias"] = torch.randn(30, 48), torch.randn(30)
    torch.save({"model": ft, "cfg": {"model": {"w2v_args": {"model": settings, "task": {"normalize": True}}}}}, tmp_path / "ft.pt")
    model = load_pretrained(convert(tmp_path / "ft.pt", tmp_path / "f.pt"))
    src = F.layer_norm(waves, waves.shape[-1:])
    with torch.no_grad(): ref, _ = ta.wav2vec2.extract_features(src)
    assert rel(model.extract(waves, torch.full((2,), N), 3)[0], ref[-1]) < 1e-4
    assert load_checkpoint(tmp_path / "f.pt")["converted_from"]["random_parts"] == ["head"]


def test_fairseq_refuses_what_it_cannot_rebuild(tmp_path):
    ta = tiny_torchaudio()
    torch.save({"model": fairseq_state(ta), "cfg": {"model": {**FS_MODEL, "layer_type": "conformer"}}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="layer_type='conformer'"): convert(tmp_path / "c.pt", tmp_path / "x.pt")
    sd = fairseq_state(ta); sd["label_embs_concat"] = torch.randn(40, 16); sd["final_proj.weight"] = torch.randn(32, 48)
    torch.save({"model": sd, "args": argparse.Namespace(**FS_MODEL)}, tmp_path / "u.pt")
    with pytest.raises(ValueError, match="final_proj has shape"): convert(tmp_path / "u.pt", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def tiny_hf(stable: bool):
    from transformers import HubertConfig, HubertModel
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                       do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group", conv_bias=stable)
    torch.manual_seed(1)
    m = HubertModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"): p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("stable", [False, True])
def test_huggingface_folder_and_object(tmp_path, waves, stable):
    pytest.importorskip("transformers")
    hf = tiny_hf(stable)
    hf.save_pretrained(tmp_path / "hf")
    with torch.no_grad(): got = hf(waves, output_hidden_states=True)  # hidden_states[l]: output of layer l
    lens = torch.full((2,), N)
    for src in (tmp_path / "hf", hf):
        model = load_pretrained(convert(src, tmp_path / "ours.pt", normalize_waveform=False))
        assert model.config.hubert.layer_norm_first == stable and model.config.cnn.conv_bias == stable
        for layer in (1, 2, 3):
            assert rel(model.extract(waves, lens, layer)[0], got.hidden_states[layer]) < 1e-4
        with torch.no_grad():  # the encoder's output (after the final LayerNorm of a pre-LN model)
            h, pad, _ = model.embed(waves, lens)
            assert rel(model.encoder(h, pad)[0], got.last_hidden_state) < 1e-4
    assert load_checkpoint(tmp_path / "ours.pt")["converted_from"]["random_parts"] == ["head"]


def test_huggingface_ctc_model_and_refusals(tmp_path, waves):
    pytest.importorskip("transformers")
    from transformers import HubertConfig, HubertForCTC
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=12)
    ctc = HubertForCTC(cfg).eval()
    model = load_pretrained(convert(ctc, tmp_path / "ctc.pt"))
    with torch.no_grad(): hs = ctc.hubert(waves, output_hidden_states=True).hidden_states
    assert rel(model.extract(waves, torch.full((2,), N), 2)[0], hs[2]) < 1e-4
    cfg.feat_proj_layer_norm = False
    from transformers import HubertModel
    HubertModel(cfg).save_pretrained(tmp_path / "nolayernorm")
    with pytest.raises(ValueError, match="feat_proj_layer_norm"): convert(tmp_path / "nolayernorm", tmp_path / "x.pt")


@pytest.mark.parametrize("recipe", ["zipformer", "hubert"])
def test_icefall_checkpoints_made_by_icefall(tmp_path, recipe):
    ref = torch.load(FIXTURES / "convert_icefall_ref.pt", weights_only=True)[recipe]
    src = FIXTURES / f"convert_icefall_{recipe}.pt"
    assert detect_source(read_file(src)) == "icefall"  # Path values pass the allow-list: no --trust-pickle
    model = load_pretrained(convert(src, tmp_path / "ours.pt"))
    assert model.config.encoder == recipe and model.config.ssl.head == "linear" and model.config.cnn.normalize_waveform
    for r in ref:  # 50 frames (not a multiple of 8) and 64
        lens = torch.full((len(r["waves"]),), r["waves"].shape[1])
        with torch.no_grad():
            h, pad, _ = model.embed(r["waves"], lens)
            out, _ = model.encoder(h, pad)
            assert rel(out, r["x"]) < 1e-4 and rel(model.head(out), r["logits"]) < 1e-4
        if "layer1" in r:  # icefall's (fairseq's) output_layer=1 is our layer 1: k-means fitted there carries over
            assert rel(model.extract(r["waves"], lens, 1)[0], r["layer1"]) < 1e-4
    # a fine-tuned ASR model holds the same SSL model as its encoder (plus its own output layers, left out)
    ckpt = read_file(src)
    ckpt["model"] = {**{"encoder." + k: v for k, v in ckpt["model"].items() if k != "final_proj.weight" and k != "final_proj.bias"},
                     "ctc_output.1.weight": torch.randn(30, 24), "ctc_output.1.bias": torch.randn(30)}
    torch.save(ckpt, tmp_path / "ft.pt")
    ft = load_pretrained(convert(tmp_path / "ft.pt", tmp_path / "ft_ours.pt"))
    r = ref[0]
    with torch.no_grad():
        h, pad, _ = ft.embed(r["waves"], torch.full((2,), r["waves"].shape[1]))
        assert rel(ft.encoder(h, pad)[0], r["x"]) < 1e-4
    assert load_checkpoint(tmp_path / "ft_ours.pt")["converted_from"]["random_parts"] == ["head"]


def test_icefall_without_its_arguments(tmp_path):
    ckpt = read_file(FIXTURES / "convert_icefall_zipformer.pt")
    torch.save({"model": ckpt["model"], "encoder_dim": ckpt["encoder_dim"]}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="num_encoder_layers"): convert(tmp_path / "partial.pt", tmp_path / "x.pt")
    torch.save({"model": ckpt["model"]}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="arguments are missing"): convert(tmp_path / "bare.pt", tmp_path / "x.pt")


@pytest.fixture(scope="module")
def kmeans():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(3000, 48)).astype(np.float32)
    km = MiniBatchKMeans(n_clusters=16, max_iter=20, batch_size=600, n_init=3, random_state=0).fit(frames)
    return km, frames


def test_kmeans_sources(tmp_path, kmeans):
    km, frames = kmeans
    joblib.dump(km, tmp_path / "km.bin")
    with pytest.raises(PickleRefused, match="--trust-pickle"): convert(tmp_path / "km.bin", tmp_path / "a")
    convert(tmp_path / "km.bin", tmp_path / "a", trust_pickle=True, checkpoint=tmp_path / "m.pt", layer=2)
    joblib.dump(km, tmp_path / "km_z.bin", compress=3)  # compressed joblib too
    convert(tmp_path / "km_z.bin", tmp_path / "z", trust_pickle=True, feature="fbank")
    np.save(tmp_path / "c.npy", km.cluster_centers_)
    convert(tmp_path / "c.npy", tmp_path / "b", checkpoint=tmp_path / "m.pt", layer=2)
    torch.save(torch.from_numpy(km.cluster_centers_), tmp_path / "c.pt")
    convert(tmp_path / "c.pt", tmp_path / "c", checkpoint=tmp_path / "m.pt", layer=2)
    want = km.predict(frames)
    for d in ("a", "z", "b", "c"):
        lab = KMeansLabeler.load(tmp_path / d)
        assert (lab(torch.from_numpy(frames)).numpy() == want).all()
    cfg = KMeansLabeler.load(tmp_path / "a").config
    assert (cfg.k, cfg.n_init, cfg.batch_size, cfg.max_iter, cfg.feature, cfg.layer) == (16, 3, 600, 20, "layer", 2)
    assert cfg.checkpoint == str((tmp_path / "m.pt").resolve())
    with pytest.raises(ValueError, match="--checkpoint"): convert(tmp_path / "c.npy", tmp_path / "d")
    with pytest.raises(ValueError, match="both"): convert(tmp_path / "c.npy", tmp_path / "d", layer=2)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"\(k, D\)"): convert(tmp_path / "bad.npy", tmp_path / "d")


def test_downstream_tools_accept_converted_files(tmp_path, waves, kmeans):
    "A converted model and k-means folder through k2ssl-kmeans's layer features, k2ssl-units and k2ssl-finetune."
    from k2ssl_lit.finetune import FinetuneConfig, build_ctc_model
    from k2ssl_lit.units import UnitExtractor
    ta = tiny_torchaudio()
    torch.save({"model": fairseq_state(ta), "args": argparse.Namespace(**FS_MODEL)}, tmp_path / "fs.pt")
    model_path = convert(tmp_path / "fs.pt", tmp_path / "model.pt")
    feats = load_layer_features(model_path, 3)  # what k2ssl-kmeans --checkpoint --layer and k2ssl-units use
    with torch.no_grad(): ref, _ = ta.wav2vec2.extract_features(waves)
    assert rel(feats(waves)[0], ref[-1]) < 1e-4
    km, _ = kmeans
    joblib.dump(km, tmp_path / "km.bin")
    convert(tmp_path / "km.bin", tmp_path / "km", trust_pickle=True, checkpoint=model_path, layer=3)
    units = UnitExtractor.from_kmeans_dir(tmp_path / "km")(waves)
    assert [u.tolist() for u in units] == [km.predict(f.numpy()).tolist() for f in feats(waves)[0]]
    ctc = build_ctc_model(FinetuneConfig(pretrained=str(model_path)), vocab_size=10)
    ctc.eval()
    assert sum(p.numel() for p in ctc.parameters()) > 0


def test_cli_and_clear_errors(tmp_path):
    ta = tiny_torchaudio()
    torch.save(ta.state_dict(), tmp_path / "ta.pt")
    run = lambda *a: subprocess.run([sys.executable, "-c", "import sys; from k2ssl_lit.convert import convert_cli; "
                                     "sys.argv[0] = 'k2ssl-convert'; convert_cli()", *map(str, a)],
                                    capture_output=True, text=True)
    r = run(tmp_path / "ta.pt", tmp_path / "out.pt", "--num-heads", "4", "--encoder-norm", "post")
    assert r.returncode == 0, r.stderr
    assert load_pretrained(tmp_path / "out.pt").config.hubert.num_heads == 4
    r = run(tmp_path / "ta.pt", tmp_path / "x.pt", "--num-heads", "4", "--encoder-norm", "middle")
    assert r.returncode != 0 and "--encoder-norm must be 'pre' or 'post'" in r.stderr
    cut = {k: v for k, v in ta.state_dict().items() if "layers.2.attention.q_proj" not in k}
    torch.save(cut, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match=r"layers\.2\.attention\.q_proj"): convert(tmp_path / "cut.pt", tmp_path / "x.pt", num_heads=4)
    raw = (tmp_path / "ta.pt").read_bytes()
    (tmp_path / "short.pt").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(ValueError, match="truncated"): convert(tmp_path / "short.pt", tmp_path / "x.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="cannot tell the format"): convert(tmp_path / "odd.pt", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="unknown source"): convert(tmp_path / "ta.pt", tmp_path / "x.pt", source="onnx")
    with pytest.raises(FileNotFoundError): convert(tmp_path / "missing.pt", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="already in k2ssl_lit"): convert(tmp_path / "out.pt", tmp_path / "x.pt")
    # --source forces a reading: a torchaudio file read as fairseq fails on the names, naming one
    with pytest.raises(ValueError, match="fairseq tensors with no HuBERT counterpart"):
        convert(tmp_path / "ta.pt", tmp_path / "x.pt", source="fairseq")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("factory,dim,heads,pre_ln,mode", [
    ("hubert_base", 768, 12, False, "group_norm"), ("hubert_large", 1024, 16, True, "layer_norm"),
    ("hubert_xlarge", 1280, 16, True, "layer_norm"), ("wav2vec2_base", 768, 12, False, "group_norm"),
    ("wav2vec2_large_lv60k", 1024, 16, True, "layer_norm")])
def test_full_size_torchaudio_layouts(factory, dim, heads, pre_ln, mode):
    "The published sizes' tensor layouts (built on the meta device: shapes only) give their architecture and fit ours."
    from k2ssl_lit.convert import from_torchaudio
    from k2ssl_lit.presets import build_model
    with torch.device("meta"): sd = getattr(torchaudio.models, factory)().state_dict()
    cfg, ours, random_parts = from_torchaudio(sd)
    h = cfg.hubert
    assert (h.dim, h.num_heads, h.layer_norm_first, cfg.cnn.extractor_mode, cfg.cnn.strides) == \
        (dim, heads, pre_ln, mode, (5, 2, 2, 2, 2, 2, 2))
    assert random_parts == ["head", "mask_emb"]  # torchaudio's Wav2Vec2Model: the encoder alone
    if factory in ("hubert_base", "hubert_large"):  # the same architecture as our preset of that name
        from k2ssl_lit.presets import model_preset
        p = model_preset(factory)
        arch = ("dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel", "pos_conv_groups", "layer_norm_first")
        assert cfg.cnn == p.cnn and all(getattr(h, a) == getattr(p.hubert, a) for a in arch)
    with torch.device("meta"): want = build_model(cfg).state_dict()
    missing = set(want) - set(ours)
    assert {k.split(".")[0] for k in missing} <= set(random_parts) and set(ours) <= set(want)
    assert all(ours[k].shape == want[k].shape for k in ours)


def test_incomplete_sources_name_what_is_missing(tmp_path):
    "A tensor missing from an icefall or Hugging Face source, or a cut-short safetensors file: an error naming it, no file."
    ckpt = read_file(FIXTURES / "convert_icefall_zipformer.pt")
    gone = next(k for k in ckpt["model"] if k.startswith("encoder.encoders.2."))
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if k != gone}
    torch.save(ckpt, tmp_path / "ice.pt")
    with pytest.raises(ValueError, match=gone.replace(".", r"\.")): convert(tmp_path / "ice.pt", tmp_path / "x.pt")
    pytest.importorskip("transformers")
    hf = tiny_hf(False)
    hf.save_pretrained(tmp_path / "hf")
    raw = (tmp_path / "hf" / "model.safetensors").read_bytes()
    (tmp_path / "hf" / "model.safetensors").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"): convert(tmp_path / "hf", tmp_path / "x.pt")
    sd = {k: v for k, v in hf.state_dict().items() if k != "encoder.layers.1.final_layer_norm.bias"}
    with pytest.raises(ValueError, match=r"layers\.1\.final_layer_norm\.bias"):
        convert(sd, tmp_path / "x.pt", source="huggingface", num_heads=4)
    assert not (tmp_path / "x.pt").exists()
