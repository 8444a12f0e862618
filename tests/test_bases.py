"""The base-model interface: every stage runs on each base family (ZeroScope, AnimateDiff) through the
same method code; what differs (layers, loading, the denoiser call) is the family module's."""
from __future__ import annotations

import re

import pytest
import torch

from videomage_core.attention import AttentionRecorder
from videomage_core.bases import FAMILIES, family, family_of
from videomage_core.diffusion import encode_prompts, predict_noise
from videomage_core.fusion import FusionSettings, fuse_subjects
from videomage_core.lora import inject_lora, lora_layers
from videomage_core.motion import MotionSettings, train_motion
from videomage_core.pipeline import generate_video
from videomage_core.sampling import SampleSettings, SCSSettings, ddim_sample, initial_noise
from videomage_core.subject import SubjectSettings, train_subject

# Each family's temporal layers, as the module names a reader recognises in its architecture.
TEMPORAL_MODULE = {"zeroscope": r"temp_attentions|transformer_in", "animatediff": r"motion_modules"}


def _images(n=3, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 8, size // 8, generator=gen)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").permute(0, 2, 3, 1)


def _video(frames=4, size=64):
    base = _images(1, size)[0]
    return torch.stack([torch.roll(base, shifts=4 * i, dims=1) for i in range(frames)])


def test_the_registry_names_a_module_per_family_with_the_whole_interface():
    needed = ("NAME", "TITLE", "UNET_CLASSES", "DEFAULTS", "DEFAULT_LEVELS", "LORA_TARGETS", "COMPONENTS",
              "denoise", "attention_layer_names", "checkpointed_modules", "recognizes", "load_components",
              "tiny_components", "save_folder", "real_size", "unet_from_config")
    for name in FAMILIES:
        fam = family(name)
        assert fam.NAME == name
        assert not [n for n in needed if not hasattr(fam, n)], name
        assert set(fam.LORA_TARGETS) == {"spatial", "temporal"}
        assert {"width", "height", "frames", "steps", "cfg"} <= set(fam.DEFAULTS)


def test_each_base_has_its_spatial_and_temporal_layers(any_base_model):
    model = any_base_model
    fam = family_of(model)
    temporal_re = TEMPORAL_MODULE[fam.NAME]
    inject_lora(model, "s", "spatial")
    inject_lora(model, "t", "temporal")
    spatial = [n for n, layer in lora_layers(model.unet) if "s" in layer.lora_A]
    temporal = [n for n, layer in lora_layers(model.unet) if "t" in layer.lora_A]
    assert spatial and temporal and not set(spatial) & set(temporal)
    assert all(re.search(r"\.attentions\.\d+\.", n) and not re.search(temporal_re, n) for n in spatial)
    assert all(re.search(temporal_re, n) for n in temporal)
    # SCA and TSA maps from the default level, with the documented shapes
    rec = AttentionRecorder(model.unet)
    x = torch.randn(1, 4, 4, 8, 8)
    with rec, rec.recording(x.shape):
        predict_noise(model, x, torch.tensor(500), encode_prompts(model, ["a toy"]))
    assert rec.spatial_maps().shape[:3] == (1, 4, 77)
    tsa = rec.temporal_maps()
    assert tsa.shape[0] == 1 and tsa.shape[-2:] == (4, 4)
    assert torch.allclose(tsa.sum(-1), torch.ones_like(tsa.sum(-1)), atol=1e-5), "rows are probabilities"


def test_animatediff_folder_loads_and_its_defaults_are_animatediffs(animatediff_model_dir):
    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)
    assert type(model.unet).__name__ == "UNetMotionModel" and model.family.NAME == "animatediff"
    assert model.default("steps", 50) == 25 and model.default("cfg", 9.0) == 7.5
    assert model.default("width", 576) == 64  # its videomage.json (a tiny model) before the family's 512


def test_animatediff_plain_sampler_matches_diffusers_pipeline(animatediff_model_dir):
    """Both loops in float64: then their only difference, the order of floating-point reductions (kernels
    picked per batch shape), is bounded by steps * (2 cfg - 1) * 2^-53 * max|x| amplified by the network's
    depth, far below 1e-9 of the latents; a wrong timestep, CFG term or text layout moves them by O(1).
    (In fp32 the same loops differ by about 1e-5 relative on this model, which a fixed bound cannot tell
    from a small algorithmic difference.)"""
    from diffusers import AnimateDiffPipeline

    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)
    for m in (model.unet, model.vae, model.text_encoder):
        m.double()
    model.dtype = torch.float64
    st = SampleSettings(frames=3, height=64, width=64, steps=4, cfg=7.5, seed=3)
    latents = initial_noise(model, st)
    ours = ddim_sample(model, "a toy rides a dog", st, latents=latents)
    pipe = AnimateDiffPipeline.from_pretrained(animatediff_model_dir, torch_dtype=torch.float64)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a toy rides a dog", num_frames=3, height=64, width=64, num_inference_steps=4, guidance_scale=7.5,
               latents=latents.clone(), output_type="latent").frames
    assert ours.dtype == out.dtype == torch.float64
    assert (ours - out).abs().max() <= 1e-9 * float(out.abs().max()), (ours - out).abs().max()


def test_every_stage_runs_on_animatediff(animatediff_model_dir, tmp_path):
    """Subject (LoRA + token + prior videos), motion (appearance-free loss + textual inversion), fusion
    (average of deltas, L_fusion, L_attn), SCS and w/o SCS with the noise prior: the same calls as on
    ZeroScope, whose stages test_training, test_sampling and test_nodes cover one by one."""
    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)
    base = model.family.NAME
    subjects = []
    for i, (tok, word) in enumerate([("<toy>", "toy"), ("<dog>", "dog")]):
        st = SubjectSettings(token=tok, superclass=word, steps=2, height=64, width=64, prior_videos=1,
                             prior_frames=3, prior_steps=2, seed=i)
        subjects.append(train_subject(model, _images(seed=i), st, cache_dir=tmp_path))
    motion = train_motion(model, _video(), MotionSettings(motion_prompt="a toy moving right",
                                                          reference_words=("toy",), steps=2, inversion_steps=1,
                                                          height=64, width=64, frames=4))
    fused = fuse_subjects(model, subjects, FusionSettings(steps=2, frames=3, height=64, width=64,
                                                          generation_steps=2, videos_per_subject=1,
                                                          cutmix_videos=1), cache_dir=tmp_path)
    for art in (*subjects, motion, fused):
        assert art.base == base and art.losses and all(map(lambda v: v == v, art.losses))
    assert fused.info["parts"]["L_attn"] > 0, "L_attn read the SCA maps of this base"
    assert model.adapters == {}
    st = SampleSettings(frames=4, height=64, width=64, steps=3, seed=0)
    for mode in ("scs", "wo_scs"):
        frames = generate_video(model, fused, motion, "a <toy> rides a <dog>", st, mode=mode,
                                scs=SCSSettings(tau=2), noise_prior_beta=0.3)
        assert frames.shape == (4, 64, 64, 3) and torch.isfinite(frames).all()
    assert model.adapters == {}


def test_animatediff_training_resumes_and_checkpoints_like_zeroscope(animatediff_model_dir, tmp_path, one_thread):
    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)

    def run(**kw):
        st = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=4,
                            inversion_steps=2, height=64, width=64, frames=4, **kw.pop("settings", {}))
        return train_motion(model, _video(), st, **kw)

    full = run()
    ckpt = tmp_path / "motion.ckpt.safetensors"
    run(checkpoint_path=ckpt, stop_after=2)
    resumed = run(checkpoint_path=ckpt)
    assert resumed.train_args["resumed_from"] == 2 and resumed.losses == full.losses
    for key, value in full.lora.items():
        assert torch.equal(resumed.lora[key], value), key
    # gradient checkpointing (the family's modules wrapped) computes the same training
    checked = run(settings={"gradient_checkpointing": True})
    assert checked.losses == pytest.approx(full.losses, rel=1e-5)


def test_cancel_stops_an_animatediff_training_and_leaves_the_model_clean(animatediff_model_dir, tmp_path):
    from videomage_core.errors import TrainingCancelled
    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)
    steps = []
    settings = SubjectSettings(token="<toy>", superclass="toy", steps=10, height=64, width=64, prior_videos=1,
                               prior_frames=2, prior_steps=1)
    with pytest.raises(TrainingCancelled, match="cancelled at step 2/10"):
        train_subject(model, _images(), settings, cache_dir=tmp_path, cancel=lambda: len(steps) >= 2,
                      callback=lambda info: steps.append(info.step) if info.stage == "subject" else None)
    assert model.adapters == {} and not any(p.requires_grad for p in model.unet.parameters())
