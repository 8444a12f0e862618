"""Sampling options beyond the paper, both off by default: CustomCrafter's dynamic weighted sampling
(``SampleSettings.subject_early_scale`` / ``subject_early_steps``) and Customize-A-Video's two motions in one
video (``generate_video(motion_2=..., motion_weight=..., motion_2_weight=...)``), and the sampler node's
optional inputs for them. Tiny ZeroScope-layout model, 3 frames at 64x64, 3 steps.

Tolerances: most comparisons are bit-exact (``torch.equal``) because both sides run the same op sequence:
a LoRA at scale 0 adds ``lora_B(lora_A(x)) * 0.0 == 0`` to the layer's output, exactly what an adapter with
B = 0 adds, and ``y + 0 == y`` in floating point, so "scale 0" and "adapter off" (or a zero adapter) give the
same bits, forward and backward. Where a reference composes the LoRAs another way (one rank-8 LoRA instead of
two rank-4 ones) the sum is reassociated, and the bound is stated at the assertion.
"""
from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from videomage_core import pipeline as P
from videomage_core import sampling as S
from videomage_core.artifacts import LoraArtifact
from videomage_core.errors import IncompatibleArtifactError, VideoMageInputError
from videomage_core.lora import (adapter_scales, adapters_active, delete_lora, inject_lora, lora_layers,
                                 lora_state_dict)
from videomage_core.pipeline import generate_video
from videomage_core.sampling import SampleSettings, SCSSettings, ddim_sample, initial_noise
from videomage_core.tokens import add_token, get_token_embedding

from helpers import randomize_lora_b

SUPER = {"<toy>": "toy", "<dog>": "dog"}
PROMPT = "A <toy> rides a <dog>"
STEPS = 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: bit-exact comparisons of runs with a backward (SCS's guided passes) need it
    (two threads may reduce some CPU backward kernels in another order), and a small shared CPU is faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _settings(**kw) -> SampleSettings:
    return SampleSettings(frames=3, height=64, width=64, steps=STEPS, cfg=5.0, seed=0, **kw)


def _lora(model, scope: str, seed: int, std: float = 0.08, rank: int = 4) -> dict:
    inject_lora(model, "tmp", scope, rank=rank, alpha=float(rank), seed=seed)
    randomize_lora_b(model, "tmp", std, seed=seed)
    state = lora_state_dict(model, "tmp")
    delete_lora(model, "tmp")
    return state


def _subject(model) -> LoraArtifact:
    tokens = {}
    for i, (tok, word) in enumerate(SUPER.items()):
        add_token(model, tok, init_word=word)
        gen = torch.Generator().manual_seed(10 + i)
        row = get_token_embedding(model, tok)
        tokens[tok] = row + 0.3 * torch.randn(row.shape, generator=gen)
    return LoraArtifact(kind="subject", scope="spatial", rank=4, alpha=4.0, lora=_lora(model, "spatial", 1),
                        tokens=tokens, superclasses=dict(SUPER), base_fingerprint=model.fingerprint)


def _motion(model, seed: int) -> LoraArtifact:
    gen = torch.Generator().manual_seed(100 + seed)
    return LoraArtifact(kind="motion", scope="temporal", rank=4, alpha=4.0,
                        lora=_lora(model, "temporal", seed), tokens={}, superclasses={},
                        base_fingerprint=model.fingerprint,
                        reference_latents=torch.randn(1, 4, 3, 8, 8, generator=gen))


@pytest.fixture(scope="module")
def arts(tiny_model_dir):
    """One loaded tiny model (generate_video leaves no adapter behind), a subject and two motions."""
    from videomage_core.model import load_model

    model = load_model(tiny_model_dir)
    return model, _subject(model), _motion(model, 2), _motion(model, 3)


def _gen(arts, mode, settings=None, subject=None, motion=None, **kw):
    model, sub, mot, _ = arts
    out = generate_video(model, subject or sub, motion or mot, PROMPT, settings or _settings(), mode=mode,
                         scs=SCSSettings(tau=2, alpha0=10.0), noise_prior_beta=0.3, **kw)
    assert model.adapters == {}, "generate_video removes its adapters"
    return out


def _zero_b(art: LoraArtifact) -> LoraArtifact:
    """The same artifact with B = 0: its adapter adds exactly nothing (the LoRA off, tokens kept)."""
    return dataclasses.replace(art, lora={k: torch.zeros_like(v) if ".lora_B." in k else v
                                          for k, v in art.lora.items()})


# ---------------------------------------------------------------------------------------------- (a) defaults

@pytest.mark.parametrize("mode", ["scs", "wo_scs"])
def test_defaults_and_explicit_off_values_are_bit_identical(arts, mode, monkeypatch):
    """Off (the defaults) is the paper's sampler: an early scale of 1, or 0 early steps, or a first motion
    weight of 1, gives the default call's bits; and with the defaults the scaling helper is never asked to
    change a LoRA scale (it skips factors of 1.0), so the arithmetic is the one of the code before the options
    (also compared once, bit for bit, with that code's output when the options were added)."""
    asked = []
    real = adapter_scales

    def spy(model, scales):
        asked.append(dict(scales))
        return real(model, scales)

    monkeypatch.setattr(S, "adapter_scales", spy)
    monkeypatch.setattr(P, "adapter_scales", spy)
    default = _gen(arts, mode)
    assert asked and all(f == 1.0 for scales in asked for f in scales.values()), asked
    for off in (_gen(arts, mode, _settings(subject_early_scale=1.0, subject_early_steps=STEPS)),
                _gen(arts, mode, _settings(subject_early_scale=0.25, subject_early_steps=0)),
                _gen(arts, mode, motion_weight=1.0, motion_2=None, motion_2_weight=1.0)):
        assert torch.equal(off, default)


# ------------------------------------------------------------------------- (b) dynamic weighted sampling

@pytest.mark.parametrize("mode", ["scs", "wo_scs"])
def test_early_scale_zero_for_all_steps_is_the_subject_lora_off(arts, mode):
    """Scale 0 for every step equals the same subject with its LoRA adding nothing (B = 0, tokens kept): in
    SCS the subject branch, its guided passes included (tau 2 of 3 steps); w/o SCS the subject adapter
    next to the motion. A scale of 0.5 differs from both (the option acts)."""
    model, sub, _, _ = arts
    off = _gen(arts, mode, _settings(subject_early_scale=0.0, subject_early_steps=STEPS))
    reference = _gen(arts, mode, subject=_zero_b(sub))
    assert torch.equal(off, reference)
    half = _gen(arts, mode, _settings(subject_early_scale=0.5, subject_early_steps=STEPS))
    full = _gen(arts, mode)
    assert (half - off).abs().max() > 1e-3 and (half - full).abs().max() > 1e-3


@pytest.fixture()
def custom(model):
    """The conftest model with the two tokens, a spatial 'sub' and a temporal 'mot' adapter (random B)."""
    for tok, word in SUPER.items():
        add_token(model, tok, init_word=word)
    inject_lora(model, "sub", "spatial")
    inject_lora(model, "mot", "temporal")
    randomize_lora_b(model, "sub", 0.08, seed=1)
    randomize_lora_b(model, "mot", 0.08, seed=2)
    return model


def test_early_steps_switch_the_subject_adapter_at_the_right_step(custom):
    """w/o SCS, 1 early step at scale 0: step 0 runs the motion adapter alone, steps 1-2 subject + motion.
    The reference is that DDIM loop written out (the same calls as ``ddim_sample``, so bit-exact)."""
    model = custom
    st = _settings(subject_early_scale=0.0, subject_early_steps=1)
    ours = ddim_sample(model, PROMPT, st, adapters=["sub", "mot"], subject_adapter="sub")
    sched = S._scheduler(model, STEPS)
    x = initial_noise(model, st)
    text = S.encode_prompts(model, ["", PROMPT])
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            with adapters_active(model, ["mot"] if i < 1 else ["sub", "mot"]):
                eps = S._cfg_eps(model, x, t, text, st.cfg)
            x = sched.step(eps, t, x).prev_sample
    assert torch.equal(ours, x)
    assert not torch.equal(ours, ddim_sample(model, PROMPT, _settings(), adapters=["sub", "mot"]))


def test_scs_early_scale_zero_equals_a_zero_subject_adapter(custom):
    """The same at the sampler: ``scs_sample`` with 'sub' at scale 0 for all steps (guided passes too) equals
    ``scs_sample`` with a zero adapter as the subject branch's."""
    model = custom
    inject_lora(model, "zero", "spatial")  # B = 0
    scs = SCSSettings(tau=2, alpha0=10.0)
    ours = S.scs_sample(model, PROMPT, SUPER, "sub", "mot",
                        _settings(subject_early_scale=0.0, subject_early_steps=STEPS), scs)
    ref = S.scs_sample(model, PROMPT, SUPER, "zero", "mot", _settings(), scs)
    assert torch.equal(ours, ref)


def test_adapter_scales_scales_one_adapter_and_restores_exactly(custom):
    model = custom
    before = {(id(layer), n): v for _, layer in lora_layers(model.unet) for n, v in layer.scaling.items()}
    with pytest.raises(RuntimeError, match="boom"):
        with adapter_scales(model, {"sub": 0.3}):
            for _, layer in lora_layers(model.unet):
                if "sub" in layer.scaling:
                    assert layer.scaling["sub"] == before[(id(layer), "sub")] * 0.3
                if "mot" in layer.scaling:
                    assert layer.scaling["mot"] == before[(id(layer), "mot")]
            with adapter_scales(model, {"sub": 0.5}):  # nested uses compose
                some = next(layer for _, layer in lora_layers(model.unet) if "sub" in layer.scaling)
                assert some.scaling["sub"] == before[(id(some), "sub")] * 0.3 * 0.5
            raise RuntimeError("boom")
    after = {(id(layer), n): v for _, layer in lora_layers(model.unet) for n, v in layer.scaling.items()}
    assert after == before
    with pytest.raises(VideoMageInputError, match="^adapters:"):
        with adapter_scales(model, {"nope": 0.5}):
            pass


# ------------------------------------------------------------------------------------- (c) two motions

@pytest.mark.parametrize("mode", ["scs", "wo_scs"])
def test_second_motion_at_weight_zero_is_one_motion(arts, mode):
    _, _, _, mot2 = arts
    one = _gen(arts, mode)
    assert torch.equal(_gen(arts, mode, motion_2=mot2, motion_2_weight=0.0), one)
    assert (_gen(arts, mode, motion_2=mot2) - one).abs().max() > 1e-3  # at weight 1 it acts


def test_two_motions_add_their_weighted_deltas_on_a_layer(arts):
    """On one temporal layer both motion adapters active at weights w1, w2 add ``w1 dW1 x + w2 dW2 x``
    (``dW = alpha/rank B A`` from the artifacts' own tensors)."""
    from videomage_core.artifacts import apply_artifact
    from videomage_core.lora import lora_delta

    model, _, mot, mot2 = arts
    w1, w2 = 0.6, 1.4
    apply_artifact(model, mot, "m1")
    apply_artifact(model, mot2, "m2")
    try:
        path, layer = next((p, m) for p, m in lora_layers(model.unet)
                           if "m1" in m.lora_A and "m2" in m.lora_A)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 5, layer.lora_A["m1"].weight.shape[1], generator=gen)
        with (torch.no_grad(), adapters_active(model, ["m1", "m2"]),
              adapter_scales(model, {"m1": w1, "m2": w2})):
            got = layer(x)
            base = layer.get_base_layer()(x)
        delta = w1 * lora_delta(mot.lora, path, mot.scaling) + w2 * lora_delta(mot2.lora, path, mot2.scaling)
        want = base + x @ delta.T
        # fp32, values O(1) summed over a few hundred products: the two orders of summation differ by a few
        # units in the last place (~1e-6 here); a missing weight or adapter would be off by ~1e-2
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert (got - base).abs().max() > 1e-2
    finally:
        delete_lora(model, "m1")
        delete_lora(model, "m2")


def _composed(mot: LoraArtifact, mot2: LoraArtifact, w1: float, w2: float) -> LoraArtifact:
    """One rank-8 motion LoRA whose delta is ``w1 dW1 + w2 dW2`` (A's stacked, B's scaled and stacked;
    scaling 1), with the first motion's reference clip."""
    lora = {}
    for key in mot.lora:
        if ".lora_A." in key:
            lora[key] = torch.cat([mot.lora[key], mot2.lora[key]], 0)
        else:
            lora[key] = torch.cat([mot.lora[key] * (w1 * mot.scaling),
                                   mot2.lora[key] * (w2 * mot2.scaling)], 1)
    return dataclasses.replace(mot, rank=8, alpha=8.0, lora=lora)


@pytest.mark.parametrize("mode", ["scs", "wo_scs"])
def test_two_motions_equal_their_sum_as_one_lora(arts, mode):
    """The video with motion + motion_2 at (0.6, 1.4) equals the video with one LoRA holding the weighted sum
    of both deltas (and the first motion's reference for the noise prior)."""
    _, _, mot, mot2 = arts
    two = _gen(arts, mode, motion_2=mot2, motion_weight=0.6, motion_2_weight=1.4)
    one = _gen(arts, mode, motion=_composed(mot, mot2, 0.6, 1.4))
    # the same sum reassociated (B1 A1 x + B2 A2 x against [B1 B2][A1; A2] x): fp32 rounding, amplified by
    # CFG 5 over 3 steps and the decoder, stays far below 1e-4 on frames in 0..1; a wrong weight or a
    # dropped motion moves them by > 1e-3 (checked against the first motion alone)
    torch.testing.assert_close(two, one, rtol=0, atol=1e-4)
    assert (two - _gen(arts, mode)).abs().max() > 1e-3


# -------------------------------------------------------------------------------------------- (d) bad inputs

def _bad_cases(arts):
    model, sub, mot, mot2 = arts
    other = dataclasses.replace(mot2, base_fingerprint="another-base")
    return [
        (dict(motion_2=sub), VideoMageInputError, "^motion_2: expected a trained motion, got a subject"),
        (dict(motion_2=object()), VideoMageInputError, "^motion_2: expected a trained motion"),
        (dict(motion_2=mot2, motion=None, mode="wo_scs"), VideoMageInputError, "^motion_2: .*give motion"),
        (dict(motion_2=other), IncompatibleArtifactError, "^motion_2: .*another base model"),
        (dict(motion_2=mot2, motion_2_weight=-0.1), VideoMageInputError, r"^motion_2_weight: .*0\.\.2"),
        (dict(motion_2=mot2, motion_2_weight=2.5), VideoMageInputError, "^motion_2_weight:"),
        (dict(motion_2=mot2, motion_2_weight=math.nan), VideoMageInputError, "^motion_2_weight:"),
        (dict(motion_weight=math.inf), VideoMageInputError, "^motion_weight:"),
        (dict(motion_weight="1"), VideoMageInputError, "^motion_weight:"),
        (dict(settings=_settings(subject_early_scale=1.5, subject_early_steps=1)), VideoMageInputError,
         r"^subject_early_scale: .*0\.\.1"),
        (dict(settings=_settings(subject_early_scale=-0.1)), VideoMageInputError, "^subject_early_scale:"),
        (dict(settings=_settings(subject_early_scale=math.nan)), VideoMageInputError,
         "^subject_early_scale:"),
        (dict(settings=_settings(subject_early_steps=-1)), VideoMageInputError, "^subject_early_steps:"),
        (dict(settings=_settings(subject_early_steps=STEPS + 1)), VideoMageInputError,
         rf"^subject_early_steps: .*0\.\.{STEPS}"),
        (dict(settings=_settings(subject_early_steps=1.5)), VideoMageInputError, "^subject_early_steps:"),
    ]


def test_bad_options_raise_one_clear_error_before_sampling(arts, monkeypatch):
    model, sub, mot, _ = arts
    monkeypatch.setattr(P, "noise_prior_latents", lambda *a, **k: pytest.fail("validation comes first"))
    for kw, error, match in _bad_cases(arts):
        kw = dict(kw)
        mode = kw.pop("mode", "scs")
        motion = kw.pop("motion", mot)
        settings = kw.pop("settings", _settings())
        with pytest.raises(error, match=match):
            generate_video(model, sub, motion, PROMPT, settings, mode=mode, **kw)
        assert model.adapters == {}, kw


def test_ddim_sample_needs_the_subject_adapter_for_the_early_scale(custom):
    st = _settings(subject_early_scale=0.5, subject_early_steps=1)
    with pytest.raises(VideoMageInputError, match="^subject_adapter:"):
        ddim_sample(custom, PROMPT, st, adapters=["sub", "mot"])
    with pytest.raises(VideoMageInputError, match="^subject_adapter:"):
        ddim_sample(custom, PROMPT, st, adapters=["mot"], subject_adapter="sub")


def test_notes_say_what_the_options_did(arts):
    model, sub, mot, mot2 = arts
    notes = []
    _gen(arts, "wo_scs", _settings(subject_early_scale=0.25, subject_early_steps=2), motion_2=mot2,
         motion_2_weight=0.5, notes=notes)
    text = "\n".join(notes)
    assert "subject LoRA at 0.25 for the first 2 of 3 steps" in text
    assert "weights 1 and 0.5" in text and "first motion's reference" in text


# ------------------------------------------------------------------------------------------------------- node

NEW_INPUTS = {"motion_2": "VIDEOMAGE_MOTION", "motion_2_weight": "FLOAT", "subject_early_scale": "FLOAT",
              "subject_early_steps": "INT", "region_weighting": ["off", "on"], "region_outside": "FLOAT",
              "region_inside": "FLOAT"}  # the last three: SCS by region (tests/test_scs_regions.py)


def test_sampler_node_offers_the_options_as_optional_inputs_defaulting_to_off():
    """Optional, so workflows saved before them stay valid (ComfyUI fills an absent optional widget with its
    default, the API format simply omits it); their defaults are the engine's 'off'."""
    from nodes.sampler import VideoMageCollaborativeSampler as Node

    spec = Node.INPUT_TYPES()
    assert not set(NEW_INPUTS) & set(spec["required"])
    optional = spec["optional"]
    assert list(optional)[-len(NEW_INPUTS):] == list(NEW_INPUTS)  # appended: old widget orders hold
    for name, kind in NEW_INPUTS.items():
        assert optional[name][0] == kind and optional[name][1]["tooltip"], name
    defaults = SampleSettings()
    assert optional["subject_early_scale"][1]["default"] == defaults.subject_early_scale == 1.0
    assert optional["subject_early_steps"][1]["default"] == defaults.subject_early_steps == 0
    early = optional["subject_early_scale"][1]
    assert (early["min"], early["max"]) == (0.0, 1.0)
    assert optional["motion_2_weight"][1]["default"] == 1.0
    assert (optional["motion_2_weight"][1]["min"], optional["motion_2_weight"][1]["max"]) == P.MOTION_WEIGHTS
    params = inspect.signature(Node.sample).parameters
    assert params["motion_2"].default is None and params["motion_2_weight"].default == 1.0
    assert params["subject_early_scale"].default == 1.0 and params["subject_early_steps"].default == 0
    assert optional["region_weighting"][1]["default"] == params["region_weighting"].default == "off"
    engine = inspect.signature(generate_video).parameters
    assert engine["motion_2"].default is None and engine["motion_2_weight"].default == 1.0


def test_sampler_node_passes_the_options_to_the_engine(arts, monkeypatch, tmp_path):
    from nodes.sampler import VideoMageCollaborativeSampler as Node

    for var in ("VIDEOMAGE_OUTPUT_DIR", "VIDEOMAGE_TEMP_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var))
    model, sub, mot, mot2 = arts
    common = dict(model=model, subject=sub, prompt=PROMPT, mode="w/o SCS", frames=3, width=64, height=64,
                  steps=STEPS, cfg=5.0, seed=0, tau=0, alpha=10.0, beta_s=0.5, beta_m=0.5,
                  noise_prior_beta=0.3, motion=mot)
    out = Node().sample(**common, motion_2=mot2, motion_2_weight=0.5, subject_early_scale=0.25,
                        subject_early_steps=2)
    frames, _, info = out["result"]
    settings = _settings(subject_early_scale=0.25, subject_early_steps=2)
    want = _gen(arts, "wo_scs", settings, motion_2=mot2, motion_2_weight=0.5)
    assert torch.equal(frames, want.float().clamp(0, 1))
    assert "motion_2 VideoMageMotion" in info and "subject LoRA at 0.25" in info
    plain = Node().sample(**common)["result"][0]  # an old workflow: none of the new inputs
    assert torch.equal(plain, _gen(arts, "wo_scs").float().clamp(0, 1))
