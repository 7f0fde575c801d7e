"""Parity of our HuBERT (waveform CNN, projection, Transformer encoder, cosine head, feature penalty, gradient scale)
with torchaudio's wav2vec 2.0 / HuBERT, in process: tiny random torchaudio models of both CNN arrangements
("group_norm": HuBERT Base, "layer_norm": HuBERT Large) and both LayerNorm placements (post-LN, pre-LN), their weights
renamed onto ours with `hubert_state_from_torchaudio`. Outputs of every layer agree to 1e-4 relative (max |ours - ref|
over max |ref|) in eval mode, on padded batches; the full-size Base and Large presets have exactly torchaudio's
tensors."""
import pytest
import torch
import torch.nn.functional as F
from torchaudio.models import hubert_pretrain_base, hubert_pretrain_large, hubert_pretrain_model, wav2vec2_model

from k2ssl_lit.core import padding_mask
from k2ssl_lit.hubert import CNNConfig, HubertEncoderConfig, hubert_state_from_torchaudio
from k2ssl_lit.presets import ModelConfig, build_model, model_preset
from k2ssl_lit.ssl import SSLConfig

C, D, LAYERS, HEADS, FFN, POS_K, POS_G = 16, 32, 3, 4, 64, 16, 4
CONV = [(C, 10, 5)] + [(C, 3, 2)] * 4 + [(C, 2, 2)] * 2  # HuBERT's geometry (400-sample window, hop 320), narrow
TOL = 1e-4
COMBOS = [(mode, pre_ln, bias) for mode in ("group_norm", "layer_norm") for pre_ln in (False, True) for bias in (False, True)]


def rel(ours, ref):
    "max |ours - ref| / max |ref|"
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def randomize(model, seed=0):
    "Every parameter random (norm scales around 1), so that a swapped or misplaced tensor cannot go unnoticed."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if p.dim() > 1 or "bias" in name else 0.2
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and "weight" in name else 0.0))
    return model.eval()


def tiny_wav2vec2(mode, pre_ln, bias):
    return randomize(wav2vec2_model(mode, CONV, bias, D, 0.0, POS_K, POS_G, LAYERS, HEADS, 0.0, FFN, 0.0, 0.0, pre_ln,
                                    0.0, None))


def ours(mode, pre_ln, bias, num_classes=10, final_dim=8, grad_mult=1.0):
    cfg = ModelConfig(encoder="hubert", frontend="cnn",
                      hubert=HubertEncoderConfig(dim=D, num_layers=LAYERS, num_heads=HEADS, ffn_dim=FFN,
                                                 pos_conv_kernel=POS_K, pos_conv_groups=POS_G, dropout=0.0,
                                                 attention_dropout=0.0, layer_drop=0.0, layer_norm_first=pre_ln),
                      cnn=CNNConfig(channels=C, extractor_mode=mode, conv_bias=bias),
                      ssl=SSLConfig(num_classes=num_classes, head="cosine", final_dim=final_dim, dropout_input=0.0,
                                    feature_grad_mult=grad_mult))
    return build_model(cfg).eval()


WAV = torch.randn(3, 7_000, generator=torch.Generator().manual_seed(1))
LENS = torch.tensor([7_000, 5_123, 2_000])


@pytest.mark.parametrize("mode,pre_ln,bias", COMBOS)
def test_every_layer_matches_torchaudio(mode, pre_ln, bias):
    ref = tiny_wav2vec2(mode, pre_ln, bias)
    model = ours(mode, pre_ln, bias)
    missing, unexpected = model.load_state_dict(hubert_state_from_torchaudio(ref.state_dict()), strict=False)
    assert unexpected == [] and sorted(missing) == ["head.class_emb", "head.proj.bias", "head.proj.weight", "mask_emb"]
    worst = {}
    with torch.no_grad():
        cnn = model.frontend.features(WAV, LENS)  # (B, T, C) before the LayerNorm
        h, pad, _ = model.embed(WAV, LENS)
        out, layers = model.encoder(h, pad, output_layers=True)
        flens = (~pad).sum(1)
        # each utterance against torchaudio on that utterance alone: torchaudio's first-layer GroupNorm lets the padding
        # of a batch into its statistics, ours does not; with the per-layer LayerNorm the two are the same (below)
        for b, n in enumerate(LENS.tolist()):
            T, x = int(flens[b]), WAV[b:b + 1, :n]
            ref_cnn, _ = ref.feature_extractor(x, None)
            ref_proj, _ = ref.encoder._preprocess(ref_cnn, None)
            ref_layers, _ = ref.extract_features(x)
            pairs = {"cnn": (cnn[b, :T], ref_cnn[0]), "projection": (h[b, :T], ref_proj[0]),
                     "output": (out[b, :T], ref.encoder(ref_cnn)[0])}
            pairs.update({f"layer {l + 1}": (layers[l][b, :T], r[0]) for l, r in enumerate(ref_layers)})
            for k, (a, r) in pairs.items(): worst[k] = max(worst.get(k, 0.0), rel(a, r))
        if mode == "layer_norm":  # no per-utterance statistics: torchaudio's padded batch is right, compare directly
            ref_layers, ref_lens = ref.extract_features(WAV, LENS)
            assert torch.equal(ref_lens, flens)
            for l, r in enumerate(ref_layers):
                for b in range(len(LENS)):
                    worst["padded batch"] = max(worst.get("padded batch", 0.0), rel(layers[l][b, :flens[b]], r[b, :flens[b]]))
    print(f"\n{mode} pre_ln={pre_ln} bias={bias}: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert len(worst) >= LAYERS + 3 and max(worst.values()) < TOL, worst


@pytest.mark.parametrize("mode,pre_ln,grad_mult", [("group_norm", False, 0.1), ("layer_norm", True, None)])
def test_pretraining_head_penalty_and_gradients_match_torchaudio(mode, pre_ln, grad_mult):
    "The cosine logits, feature penalty, loss and every gradient of one pre-training step, with torchaudio's masks."
    num_classes, final_dim = 12, 8
    ref = randomize(hubert_pretrain_model(
        mode, CONV, False, D, 0.0, POS_K, POS_G, LAYERS, HEADS, 0.0, FFN, 0.0, 0.0, pre_ln, 0.0,
        0.5, "static", 0.0, 4, False, 1, 0.0, "static", 0.0, 10, False, 1, False, False, num_classes, final_dim,
        grad_mult))
    model = ours(mode, pre_ln, False, num_classes, final_dim, grad_mult or 1.0)
    model.load_state_dict(hubert_state_from_torchaudio(ref.state_dict()))  # strict: every tensor has its place
    wav = WAV[:2, :6_000]  # equal lengths: torchaudio's penalty averages over padding too, ours over valid frames
    labels = torch.randint(0, num_classes, (2, 18), generator=torch.Generator().manual_seed(2))
    seen = {}
    ref.mask_generator.register_forward_hook(lambda m, args, output: seen.update(mask=output[1]))
    torch.manual_seed(3)
    logit_m, logit_u, ref_pen = ref(wav, labels)
    ref_loss = F.cross_entropy(logit_m, torch.zeros(len(logit_m), dtype=torch.long)) + 10.0 * ref_pen
    ref_loss.backward()
    mask = seen["mask"]
    assert mask.any() and (~mask).any()
    model.masker = lambda *args: (mask, None)  # the same frames masked as in torchaudio's step
    res = model(wav, torch.tensor([6_000, 6_000]), labels)
    res.loss.backward()

    def as_ours(logits, targets):  # torchaudio: column 0 is the target's logit, the target's own column is -inf
        full = logits[:, 1:].clone()
        full[torch.arange(len(full)), targets] = logits[:, 0]
        return full
    figures = {"masked logits": rel(res.logits[mask], as_ours(logit_m, labels[mask])),
               "unmasked logits": rel(res.logits[~mask], as_ours(logit_u, labels[~mask])),
               "penalty": rel(res.penalty, ref_pen), "loss": rel(res.loss, ref_loss)}
    ref_grads = hubert_state_from_torchaudio({n: p.grad for n, p in ref.named_parameters()})
    grads = dict(model.named_parameters())
    assert sorted(ref_grads) == sorted(grads)
    figures["worst gradient"] = max(rel(grads[n].grad, g) for n, g in ref_grads.items())
    print(f"\n{mode} pre_ln={pre_ln} feature_grad_mult={grad_mult}: " + ", ".join(f"{k} {v:.1e}" for k, v in figures.items()))
    assert max(figures.values()) < TOL, figures
    if grad_mult is not None:  # the gradient scale really acted: the CNN's gradient is not what it is without it
        scaled = ours(mode, pre_ln, False, num_classes, final_dim, 1.0)
        scaled.load_state_dict(model.state_dict())
        scaled.masker = model.masker
        scaled(wav, torch.tensor([6_000, 6_000]), labels).loss.backward()
        conv = "frontend.convs.3.weight"
        assert rel(grads[conv].grad, grad_mult * dict(scaled.named_parameters())[conv].grad) < TOL
        ln = "frontend.layer_norm.weight"
        assert rel(grads[ln].grad, dict(scaled.named_parameters())[ln].grad) < TOL  # above the scaling point


@pytest.mark.parametrize("preset,builder,num_classes", [("hubert_base", hubert_pretrain_base, 100),
                                                        ("hubert_large", hubert_pretrain_large, 500)])
def test_full_size_presets_have_torchaudios_tensors(preset, builder, num_classes, monkeypatch):
    "HuBERT Base and Large at full size, built without memory: every tensor of torchaudio's model has our shape."
    import torchaudio.models.wav2vec2.model as ta_model
    monkeypatch.setattr(ta_model, "_init_hubert_pretrain_model", lambda module: None)  # its init copies data: not on meta
    with torch.device("meta"):
        ref = builder(num_classes=num_classes) if preset == "hubert_base" else builder()
        model = build_model(model_preset(preset, num_classes=num_classes))
    renamed = hubert_state_from_torchaudio(ref.state_dict())
    ours_sd = model.state_dict()
    assert sorted(renamed) == sorted(ours_sd)
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in ours_sd.items()}
    cfg = model.config
    assert cfg.cnn.extractor_mode == ("layer_norm" if preset == "hubert_large" else "group_norm")
    assert cfg.hubert.layer_norm_first == (preset == "hubert_large")
    assert cfg.ssl.feature_grad_mult == (0.1 if preset == "hubert_base" else 1.0)  # torchaudio: 0.1 and None


def test_renaming_is_strict():
    sd = tiny_wav2vec2("group_norm", False, False).state_dict()
    with pytest.raises(ValueError, match=r"no counterpart here: \['aux.bias', 'aux.weight'\]"):
        hubert_state_from_torchaudio({**sd, "aux.weight": torch.zeros(2, D), "aux.bias": torch.zeros(2)})
    for key in ("encoder.transformer.layers.2.attention.v_proj.weight", "feature_extractor.conv_layers.0.layer_norm.bias",
                "encoder.feature_projection.projection.bias", "encoder.transformer.pos_conv_embed.conv.bias"):
        partial = {k: v for k, v in sd.items() if k != key}
        with pytest.raises(ValueError, match=f"lacks '{key}'"):
            hubert_state_from_torchaudio(partial)
    with pytest.raises(ValueError, match="no CNN layers or no Transformer layers"):
        hubert_state_from_torchaudio({k: v for k, v in sd.items() if not k.startswith("encoder.transformer.layers.")})
    renamed = hubert_state_from_torchaudio(sd)  # q, k, v stacked in that order
    for i, x in enumerate("qkv"):
        assert torch.equal(renamed["encoder.layers.1.attention.qkv.weight"][i * D:(i + 1) * D],
                           sd[f"encoder.transformer.layers.1.attention.{x}_proj.weight"])
