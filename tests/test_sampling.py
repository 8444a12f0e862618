import copy

import pytest
import torch

from videomage_core.attention import AttentionRecorder
from videomage_core.diffusion import encode_prompts, predict_noise
from videomage_core.lora import adapters_active, inject_lora
from videomage_core.losses import classifier_free_guidance, spatial_alignment_loss, temporal_alignment_loss
from videomage_core.sampling import (SampleSettings, SCSSettings, SCSStats, _Branch, collaborative_guidance,
                                     ddim_invert, ddim_sample, initial_noise, scs_sample)
from videomage_core.tokens import add_token

from helpers import randomize_lora_b

SUPER = {"<toy>": "toy", "<dog>": "dog"}
PROMPT = "A <toy> rides a <dog>"


@pytest.fixture()
def custom(model):
    add_token(model, "<toy>", init_word="toy")
    add_token(model, "<dog>", init_word="dog")
    inject_lora(model, "sub", "spatial")
    inject_lora(model, "mot", "temporal")
    randomize_lora_b(model, "sub", 0.05, seed=1)
    randomize_lora_b(model, "mot", 0.05, seed=2)
    return model


def test_plain_sampler_equals_diffusers_pipeline(model, tiny_model_dir):
    from diffusers import TextToVideoSDPipeline

    st = SampleSettings(frames=3, height=64, width=64, steps=4, cfg=7.5, seed=3)
    latents = initial_noise(model, st)
    ours = ddim_sample(model, "a toy rides a dog", st, latents=latents)
    pipe = TextToVideoSDPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a toy rides a dog", num_frames=3, height=64, width=64, num_inference_steps=4,
               guidance_scale=7.5, latents=latents.clone(), output_type="latent").frames
    assert torch.allclose(ours, out, atol=1e-5), (ours - out).abs().max()


def test_tau_zero_is_the_plain_two_branch_average(custom):
    model = custom
    st = SampleSettings(frames=3, height=64, width=64, steps=3, cfg=5.0, seed=1)
    scs = scs_sample(model, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=0))
    sched = copy.deepcopy(model.scheduler)
    sched.set_timesteps(3)
    x = initial_noise(model, st)
    t_sub = encode_prompts(model, ["", PROMPT])
    t_mot = encode_prompts(model, ["", "A toy rides a dog"])
    with torch.no_grad():
        for t in sched.timesteps:
            eps = 0
            for adapter, text in (("sub", t_sub), ("mot", t_mot)):
                with adapters_active(model, [adapter]):
                    u, c = predict_noise(model, torch.cat([x, x]), t, text).chunk(2)
                eps = eps + 0.5 * classifier_free_guidance(u, c, 5.0)
            x = sched.step(eps, t, x).prev_sample
    assert torch.allclose(scs, x, atol=1e-5)


def test_one_guided_step_lowers_both_alignment_losses(custom):
    model = custom
    st = SampleSettings(frames=3, height=128, width=128, steps=5, seed=0)
    x = initial_noise(model, st)
    t = torch.tensor(801)
    sub = _Branch(model, "sub", PROMPT, ["<toy>", "<dog>"], "")
    mot = _Branch(model, "mot", "A toy rides a dog", ["toy", "dog"], "")
    rec = AttentionRecorder(model.unet)

    def losses(xs, xm):
        maps = {}
        for name, br, lat in (("s", sub, xs), ("m", mot, xm)):
            with torch.no_grad(), rec, adapters_active(model, [br.adapter]), rec.recording(lat.shape):
                predict_noise(model, lat, t, br.text[1:])
            maps[name] = (br.sca(rec), rec.temporal_maps())
        return (spatial_alignment_loss(maps["s"][0], maps["m"][0]).item(),
                temporal_alignment_loss(maps["s"][1], maps["m"][1]).item())

    before_sm, before_ms = losses(x, x)
    assert before_sm > 0 and before_ms > 0
    new_sub, new_mot, l_sm, l_ms = collaborative_guidance(model, rec, sub, mot, x, x, t, alpha=1e3,
                                                          stop_early=True)
    assert l_sm == pytest.approx(before_sm, rel=1e-5) and l_ms == pytest.approx(before_ms, rel=1e-5)
    assert not torch.equal(new_sub, x) and not torch.equal(new_mot, x)
    # each update descends its own loss, whose target is the other branch's (detached) maps at x_t
    after_sm = losses(x, new_mot)[0]  # the motion branch moved towards the subject's SCA maps
    after_ms = losses(new_sub, x)[1]  # the subject branch moved towards the motion's TSA maps
    assert after_sm < before_sm and after_ms < before_ms, (before_sm, after_sm, before_ms, after_ms)
    # stopping the gradient pass at the last recorded layer gives the same update
    full_sub, full_mot, _, _ = collaborative_guidance(model, rec, sub, mot, x, x, t, alpha=1e3, stop_early=False)
    assert torch.allclose(full_sub, new_sub, atol=1e-6) and torch.allclose(full_mot, new_mot, atol=1e-6)


def test_scs_runs_guided_steps_and_reports(custom):
    stats = SCSStats()
    seen = []
    st = SampleSettings(frames=3, height=64, width=64, steps=4, seed=2)
    a = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=2), stats=stats,
                   callback=lambda info: seen.append((info.stage, info.step)))
    b = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=0))
    assert len(stats.loss_s_to_m) == 2 and len(stats.loss_m_to_s) == 2
    assert seen == [("scs", i) for i in range(1, 5)]
    assert not torch.allclose(a, b), "guidance must change the result"
    again = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=2))
    assert torch.equal(a, again), "same seed, same result"


@pytest.mark.parametrize("output_scale, steps, tolerance", [(0.0, 10, 1e-4), (0.1, 25, 0.1)])
def test_ddim_inversion_round_trips(model, output_scale, steps, tolerance):
    """Inversion then DDIM sampling (no guidance) returns the latent. A random UNet's prediction
    moves with x almost one to one, unlike a trained denoiser's, which makes any DDIM inversion
    drift; so the UNet's output layer is scaled: 0 (constant prediction: the algebra must be exact)
    and 0.1 (a smooth prediction: close)."""
    with torch.no_grad():
        model.unet.conv_out.weight.mul_(output_scale)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.nn.functional.avg_pool3d(torch.randn(1, 4, 3, 8, 8, generator=gen), 3, 1, 1) * 2
    xt = ddim_invert(model, x0, steps=steps)
    st = SampleSettings(frames=3, height=64, width=64, steps=steps, cfg=1.0)
    back = ddim_sample(model, "", st, latents=xt)
    err = (back - x0).norm() / x0.norm()
    assert err < tolerance, err
    assert (xt - x0).norm() / x0.norm() > 0.5, "inversion must actually move the latent"


def test_noise_prior_inverts_each_reference_once(model, monkeypatch):
    """The inverted reference is remembered per clip, step count and base weights."""
    import videomage_core.sampling as S

    calls = []
    real = S.ddim_invert
    monkeypatch.setattr(S, "ddim_invert", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    ref = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    st = SampleSettings(frames=3, height=64, width=64, steps=3, seed=5)
    first = S.noise_prior_latents(model, st, ref, 0.3)
    assert torch.equal(S.noise_prior_latents(model, st, ref, 0.3), first) and calls == [3]
    other_seed = S.noise_prior_latents(model, SampleSettings(frames=3, height=64, width=64, steps=3, seed=6),
                                       ref, 0.3)
    assert calls == [3] and not torch.equal(other_seed, first), "the seed only changes the fresh noise"
    S.noise_prior_latents(model, SampleSettings(frames=3, height=64, width=64, steps=4, seed=5), ref, 0.3)
    S.noise_prior_latents(model, st, ref + 1, 0.3)
    assert calls == [3, 4, 3]
    with torch.no_grad():
        model.unet.conv_out.bias.add_(0.5)
    changed = S.noise_prior_latents(model, st, ref, 0.3)
    assert calls == [3, 4, 3, 3] and not torch.equal(changed, first), "new base weights, new inversion"


def test_scs_runs_under_inference_mode(custom):
    """ComfyUI runs every node under torch.inference_mode(); the guidance gradient must still work."""
    st = SampleSettings(frames=3, height=64, width=64, steps=3, seed=2)
    expected = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=2))
    with torch.inference_mode():
        got = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=2))
    assert torch.allclose(got, expected, atol=1e-6)
