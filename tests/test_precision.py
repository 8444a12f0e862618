"""Precision (issue 14): the dtype choice, fp16 loss scaling, and half-precision gradients against fp32."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_lora_b

from videomage_core.diffusion import add_noise, encode_prompts, predict_noise, randn
from videomage_core.errors import NonFiniteLossError, VideoMageInputError
from videomage_core.lora import adapters_active, inject_lora, trainable_lora_parameters
from videomage_core.losses import motion_loss, subject_loss
from videomage_core.model import choose_dtype, load_model
from videomage_core.tokens import add_token, token_parameters
from videomage_core.training import LossScale, ParamGroup, run_training

FP16_SMALLEST_NORMAL = 2.0 ** -14  # 6.1e-5; below it fp16 is subnormal (fewer bits) and then zero


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


# ---- the dtype choice -------------------------------------------------------------------------


def test_auto_dtype_is_fp32_on_the_cpu(model):
    name, reason = choose_dtype("cpu")
    assert name == "fp32" and "auto" in reason and "cpu" in reason
    assert model.dtype == torch.float32 and model.dtype_reason == reason  # load_model's default is auto
    assert choose_dtype("cpu", "bf16") == ("bf16", "asked for")
    with pytest.raises(VideoMageInputError, match=r"^dtype: expected auto or one of"):
        choose_dtype("cpu", "fp8")


@pytest.mark.parametrize("native_bf16, expected, why", [(True, "bf16", "bf16 natively"),
                                                        (False, "fp16", "scales its loss")])
def test_auto_dtype_on_cuda_prefers_bf16_else_fp16(monkeypatch, native_bf16, expected, why):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["emulation"] = including_emulation
        return native_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    name, reason = choose_dtype("cuda")
    assert name == expected and why in reason
    assert asked == {"emulation": False}, "an emulated bf16 (pre-Ampere) is slow: it must count as none"
    assert choose_dtype("cuda", "fp32") == ("fp32", "asked for")


def test_load_model_node_says_the_dtype_and_why(tiny_model_dir, monkeypatch, capsys):
    from nodes import model_loader

    monkeypatch.setitem(model_loader.BUILTIN_MODEL_FOLDERS, "precision_tiny", tiny_model_dir)
    model = model_loader.VideoMageLoadModel().load("precision_tiny", "auto", "cpu")[0]
    assert model.dtype == torch.float32 and model.dtype_reason == choose_dtype("cpu")[1]
    line = capsys.readouterr().out
    assert "precision_tiny in fp32 on cpu" in line and model.dtype_reason in line


# ---- the loss scaler --------------------------------------------------------------------------


def test_loss_scale_defaults_and_is_off_unless_fp16(model):
    scaler = LossScale(True)
    assert scaler.scale == 2.0 ** 16 and scaler.growth_interval == 2000  # GradScaler's defaults
    off = LossScale.for_model(model)  # the fp32 tiny model
    assert not off.enabled and off.scale == 1.0
    model.dtype = torch.float16
    assert LossScale.for_model(model).enabled


def _overflowing_run(steps, p, gen, scaler, infos, **kw):
    """A toy run whose gradient passes through fp16 as 1.5 * scale: 2**16 * 1.5 = 98304 overflows fp16
    (largest 65504), 2**15 * 1.5 = 49152 does not. The step_fn returns the loss for the loop to
    back-propagate (the loop's own scaled backward)."""
    def step_fn(step):
        return (p.half() * 1.5).float().sum(), {}

    return run_training("toy", steps, [ParamGroup("p", [p], 0.1)], step_fn, gen, callback=infos.append,
                        loss_scale=scaler, **kw)


def test_an_overflowing_step_is_skipped_and_the_scale_halved():
    p = torch.nn.Parameter(torch.zeros(3))
    infos = []
    result = _overflowing_run(2, p, torch.Generator().manual_seed(0), LossScale(True), infos)
    assert [i.skipped for i in infos] == [True, False] and result.skipped_steps == [1]
    assert [i.loss_scale for i in infos] == [2.0 ** 16, 2.0 ** 15] and result.loss_scale == 2.0 ** 15
    # The skipped step left p (and AdamW's moments) alone, so p is exactly one AdamW step of the
    # true gradient 1.5 (49152 / 2**15 is exact in fp16 and fp32): the same as an unscaled fp32 run.
    q = torch.nn.Parameter(torch.zeros(3))
    run_training("toy", 1, [ParamGroup("p", [q], 0.1)], lambda s: ((q * 1.5).sum(), {}),
                 torch.Generator().manual_seed(0))
    assert torch.equal(p.detach(), q.detach()) and bool((p != 0).all())


def test_the_scale_grows_after_enough_good_steps():
    p = torch.nn.Parameter(torch.zeros(3))
    infos = []
    result = run_training("toy", 7, [ParamGroup("p", [p], 0.1)], lambda s: (((p - 1) ** 2).sum(), {}),
                          torch.Generator().manual_seed(0), callback=infos.append,
                          loss_scale=LossScale(True, init_scale=8.0, growth_interval=3))
    assert [i.loss_scale for i in infos] == [8.0] * 3 + [16.0] * 3 + [32.0]
    assert result.loss_scale == 32.0 and result.skipped_steps == []


def test_a_non_finite_loss_still_stops_a_scaled_run():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(NonFiniteLossError, match="nan at step 2/4"):
        run_training("toy", 4, [ParamGroup("p", [p], 0.1)],
                     lambda s: (((p - 1) ** 2).sum() * (float("nan") if s == 1 else 1.0), {}),
                     torch.Generator().manual_seed(0), loss_scale=LossScale(True))


def test_a_resumed_scaled_run_equals_an_uninterrupted_one(tmp_path):
    """The scale and the skipped steps are in the checkpoint: without them the resumed run would
    start again at 2**16, overflow once more and skip one more step."""
    def run(**kw):
        p = torch.nn.Parameter(torch.zeros(3))
        infos = []
        result = _overflowing_run(5, p, torch.Generator().manual_seed(0), LossScale(True), infos, **kw)
        return p.detach().clone(), result

    p_full, full = run()
    ckpt = tmp_path / "toy.safetensors"
    run(checkpoint_path=ckpt, stop_after=2)
    p_res, resumed = run(checkpoint_path=ckpt)
    assert resumed.resumed_from == 2
    assert torch.equal(p_res, p_full)
    assert resumed.skipped_steps == full.skipped_steps == [1] and resumed.loss_scale == full.loss_scale


# ---- half-precision gradients against fp32 ------------------------------------------------------


def _step_grads(model_dir, dtype: str, kind: str, shape, scalers=None):
    """Gradients of one training step's loss (fixed latents, noise, timestep) for the trained
    parameters, back-propagated as the trainers do (:class:`LossScale`, the model's own unless
    ``scalers`` are given: then one set of gradients per scaler, from the same forward pass)."""
    model = load_model(model_dir, dtype)
    gen = torch.Generator().manual_seed(0)
    x0, noise = randn(shape, gen, model), randn(shape, gen, model)
    t = torch.full((shape[0],), 500)
    x_t = add_noise(model, x0, noise, t)
    if kind in ("temporal", "spatial"):  # a LoRA alone, at its start (B = 0)
        inject_lora(model, "m", kind, 4, seed=0)
        groups = {"lora": trainable_lora_parameters(model, "m")}
        groups["lora_B"] = [p for n, p in model.unet.named_parameters() if p.requires_grad and "lora_B" in n]
        adapters, prompt = ["m"], "a toy moving right"
    else:
        add_token(model, "<toy>", init_word="toy")
        groups = {"token": token_parameters(model, ["<toy>"])}
        adapters, prompt = [], "A <toy>"
        if kind == "subject":  # the spatial LoRA and the token, as one subject step trains them
            inject_lora(model, "s", "spatial", 4, seed=0)
            randomize_lora_b(model, "s")  # B = 0 would leave A without gradient in every dtype
            groups["lora"] = trainable_lora_parameters(model, "s")
            adapters = ["s"]
    scalers = [LossScale.for_model(model)] if scalers is None else scalers
    params = list({id(p): p for ps in groups.values() for p in ps}.values())
    out = []
    with adapters_active(model, adapters):
        pred = predict_noise(model, x_t, t, encode_prompts(model, [prompt] * shape[0]))
        loss = motion_loss(pred, noise) if kind == "temporal" else subject_loss(pred, noise)
        for i, scaler in enumerate(scalers):
            scaler.backward(loss, retain_graph=i + 1 < len(scalers))
            assert scaler.unscale(params)
            out.append({k: [p.grad.detach().float().clone() for p in ps] for k, ps in groups.items()})
            for p in params:
                p.grad = None
    return out if len(scalers) > 1 else (out[0], scalers[0])


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("kind, shape", [("subject", (3, 4, 1, 8, 8)),  # 3 images of 64 x 64 px
                                         ("token", (2, 4, 1, 8, 8))])  # textual inversion, LoRA off
def test_a_half_precision_step_agrees_with_fp32(tiny_model_dir, dtype, kind, shape):
    ref, _ = _step_grads(tiny_model_dir, "fp32", kind, shape)
    half, scaler = _step_grads(tiny_model_dir, dtype, kind, shape)
    assert scaler.enabled == (dtype == "fp16")
    for group, grads in ref.items():
        assert _flat(grads).norm() > 0, group
        # The bound. A relative error r gives cosine ~ 1 - r^2 / 2, so 0.99 allows r = 14 %;
        # rounding is 2^-11 (fp16) or 2^-8 (bf16) per op, and over the ~40 ops of the tiny UNet's
        # deepest path even adding up (not averaging out) that is <= 1.6 % (fp16) or 16 % (bf16) in the
        # worst case. Measured: fp16 >= 0.99999, bf16 >= 0.9998.
        assert _cos(_flat(half[group]), _flat(grads)) >= 0.99, group


REAL_SIZE = (1, 4, 24, 40, 72)  # a ZeroScope motion step: 24 frames of 320 x 576 px, 276 480 elements


def test_unscaled_fp16_gradients_vanish_at_the_real_loss_size_and_scaled_ones_do_not(tiny_model_dir):
    """A diffusion loss is a mean over the latent's elements: at a motion step's 276 480, dL/d(prediction)
    is ~1e-6 per element, subnormal in fp16, and parts of it flush to zero in the UNet's backward (here
    for a spatial LoRA at its start, B = 0). At a quarter of that size the tiny model still agrees
    with fp32 unscaled (cosine 0.9996, measured), so this runs at the real size (about a minute on
    two idle cores, the fp16 forward shared by both backwards)."""
    n = torch.Size(REAL_SIZE).numel()
    ref, _ = _step_grads(tiny_model_dir, "fp32", "spatial", REAL_SIZE)
    scaler = LossScale(True)  # what a trainer gets for a fp16 model: scale 2^16
    raw, scaled = _step_grads(tiny_model_dir, "fp16", "spatial", REAL_SIZE, [LossScale(False), scaler])
    assert scaler.scale == 2.0 ** 16
    b_ref, b_raw, b_scaled = ref["lora_B"], raw["lora_B"], scaled["lora_B"]
    assert all(bool((g != 0).all()) for g in b_ref), "fp32: every B entry has a gradient"
    # dL/dpred = 2 (pred - target) / n is normal in fp16 only where |pred - target| >= 2^-14 n / 2 = 8.4,
    # an 8-sigma error for unit-variance noise: so (nearly) every element reaches the UNet subnormal.
    assert FP16_SMALLEST_NORMAL * n / 2 > 8
    # Unscaled: whole layers' gradients are zero, many entries flushed (measured: 14 of 80 layers, 35 % of
    # the entries; asserted: any layer, 10 %), and the step fails the 0.99 bound (measured 0.94).
    zero_layers = sum(bool((g == 0).all()) for g in b_raw)
    zero_entries = float((_flat(b_raw) == 0).float().mean())
    assert zero_layers >= 1 and zero_entries > 0.1, (zero_layers, zero_entries)
    assert _cos(_flat(raw["lora"]), _flat(ref["lora"])) < 0.99
    # Scaled by 2^16, dL/dpred is ~0.3: normal fp16, so the rounding argument of the tiny-size test holds
    # (measured cosine 0.999999, every layer >= 0.99998) and nothing is flushed.
    assert all(bool((g != 0).all()) for g in b_scaled)
    assert _cos(_flat(scaled["lora"]), _flat(ref["lora"])) >= 0.99
    assert min(_cos(a, b) for a, b in zip(b_scaled, b_ref)) >= 0.99
