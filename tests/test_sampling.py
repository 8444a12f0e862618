import copy
import math

import pytest
import torch

from videomage_core.attention import AttentionRecorder
from videomage_core.diffusion import encode_prompts, predict_noise
from videomage_core.errors import VideoMageInputError
from videomage_core.lora import adapters_active, inject_lora
from videomage_core.losses import classifier_free_guidance, spatial_alignment_loss, temporal_alignment_loss
from videomage_core.sampling import (SampleSettings, SCSSettings, SCSStats, _Branch, collaborative_guidance,
                                     ddim_invert, ddim_sample, initial_noise, scs_sample)
from videomage_core.tokens import add_token, aligned_subject_columns

from helpers import randomize_lora_b

SUPER = {"<toy>": "toy", "<dog>": "dog"}
PROMPT = "A <toy> rides a <dog>"


def _customize(model, lora_scale: float):
    """The two tokens, a spatial 'sub' and a temporal 'mot' adapter with random B of ``lora_scale``."""
    add_token(model, "<toy>", init_word="toy")
    add_token(model, "<dog>", init_word="dog")
    inject_lora(model, "sub", "spatial")
    inject_lora(model, "mot", "temporal")
    randomize_lora_b(model, "sub", lora_scale, seed=1)
    randomize_lora_b(model, "mot", lora_scale, seed=2)
    return model


@pytest.fixture()
def custom(model):
    return _customize(model, 0.05)


def test_plain_sampler_equals_diffusers_pipeline(model, tiny_model_dir):
    from diffusers import TextToVideoSDPipeline

    st = SampleSettings(frames=3, height=64, width=64, steps=4, cfg=7.5, seed=3)
    latents = initial_noise(model, st)
    ours = ddim_sample(model, "a toy rides a dog", st, latents=latents)
    pipe = TextToVideoSDPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a toy rides a dog", num_frames=3, height=64, width=64, num_inference_steps=4,
               guidance_scale=7.5, latents=latents.clone(), output_type="latent").frames
    # Both loops run the very same modules on the same inputs, so they differ only by fp32 rounding
    # (reduction order of kernels picked per batch shape). Per step the uncond and cond predictions may
    # each differ by about one rounding (unit roundoff u = 2**-24) of the latent's magnitude; CFG
    # ((1 - s) u + s c) multiplies that by |1 - s| + |s| = 2s - 1, and the DDIM updates carry it on
    # about linearly: |ours - theirs| <= steps * (2s - 1) * u * max|x| (5.9e-5 here; an algorithmic
    # difference, e.g. one wrong timestep or CFG term, moves the latents by O(1)).
    bound = st.steps * (2 * st.cfg - 1) * 2.0**-24 * float(out.abs().max())
    assert (ours - out).abs().max() <= bound, ((ours - out).abs().max(), bound)


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
    sub = _Branch(model, "sub", PROMPT, [[2], [5]], "")  # "<start> a <toy> rides a <dog>"
    mot = _Branch(model, "mot", "A toy rides a dog", [[2], [5]], "")
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
                                                          stop_early=True)[:4]
    assert l_sm == pytest.approx(before_sm, rel=1e-5) and l_ms == pytest.approx(before_ms, rel=1e-5)
    assert not torch.equal(new_sub, x) and not torch.equal(new_mot, x)
    # each update descends its own loss, whose target is the other branch's (detached) maps at x_t
    after_sm = losses(x, new_mot)[0]  # the motion branch moved towards the subject's SCA maps
    after_ms = losses(new_sub, x)[1]  # the subject branch moved towards the motion's TSA maps
    assert after_sm < before_sm and after_ms < before_ms, (before_sm, after_sm, before_ms, after_ms)
    # stopping the gradient pass at the last recorded layer gives the same update
    full_sub, full_mot = collaborative_guidance(model, rec, sub, mot, x, x, t, alpha=1e3,
                                                stop_early=False)[:2]
    assert torch.allclose(full_sub, new_sub, atol=1e-6) and torch.allclose(full_mot, new_mot, atol=1e-6)


def _maps_with_graph(model, adapter, text, columns, x, t, kinds=None):
    """Independent of the sampler: one full conditional pass (no early stop) and the subjects' SCA
    maps (columns averaged) and the TSA maps; with ``kinds``, only those maps are computed (the other
    recorded layers run their own processor) and the others are None."""
    rec = AttentionRecorder(model.unet)
    with rec, adapters_active(model, [adapter]), rec.recording(x.shape, kinds=kinds):
        predict_noise(model, x, t, text)
    sca = rec.spatial_maps() if rec.wants("spatial") else None
    sca = None if sca is None else torch.stack([sca[:, :, c].mean(2) for c in columns], 2)
    return sca, rec.temporal_maps() if rec.wants("temporal") else None


def test_scs_runs_guided_steps_and_reports(custom, monkeypatch):
    """Each guided step moves x_sub by exactly -alpha_t grad_{x_sub} L_m->s and x_mot by exactly
    -alpha_t grad_{x_mot} L_s->m (Algorithm 1 lines 7-10), against an independent computation of
    both losses and gradients at the x_t the sampler guided; the stats and the progress report them."""
    import videomage_core.sampling as S

    model = custom
    guided, cfg_inputs = [], []
    real_guidance, real_cfg = S.collaborative_guidance, S._cfg_eps

    def spy_guidance(m, rec, sub, mot, x_sub, x_mot, t, alpha, *args):
        guided.append((x_sub.clone(), x_mot.clone(), t, alpha))
        return real_guidance(m, rec, sub, mot, x_sub, x_mot, t, alpha, *args)

    monkeypatch.setattr(S, "collaborative_guidance", spy_guidance)
    monkeypatch.setattr(S, "_cfg_eps", lambda m, x, t, text, cfg: cfg_inputs.append(x.clone())
                        or real_cfg(m, x, t, text, cfg))
    stats, seen = SCSStats(), []
    st = SampleSettings(frames=3, height=64, width=64, steps=4, seed=2)
    alpha0 = 1e4
    scs_sample(model, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=2, alpha0=alpha0), stats=stats,
               callback=lambda info: seen.append((info.stage, info.step, dict(info.parts))))
    assert [(stage, step) for stage, step, _ in seen] == [("scs", i) for i in range(1, 5)]
    assert len(guided) == 2 and len(stats.loss_s_to_m) == 2 and len(stats.relative_step_mot) == 2
    text_sub = encode_prompts(model, [PROMPT])
    text_mot = encode_prompts(model, ["A toy rides a dog"])
    cols = [[2], [5]]  # "<start> a <toy> rides a <dog>" and "<start> a toy rides a dog"
    for i, (x_sub, x_mot, t, alpha) in enumerate(guided):
        assert torch.equal(x_sub, x_mot), "both branches start from x_t (Algorithm 1 line 1)"
        assert alpha == pytest.approx(alpha0 * math.sqrt(1 - 0.5 * i / 3), rel=1e-12)  # alpha_t, 4 steps
        x = x_sub
        with torch.enable_grad():
            leaf_s, leaf_m = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            # the subject branch's target SCA maps, then its TSA maps from a pass whose cross-attention runs
            # its own processor (the sampler computes only the maps each pass needs)
            sca_s, _ = _maps_with_graph(model, "sub", text_sub, cols, x, t, kinds=("spatial",))
            _, tsa_s = _maps_with_graph(model, "sub", text_sub, cols, leaf_s, t, kinds=("temporal",))
            sca_m, tsa_m = _maps_with_graph(model, "mot", text_mot, cols, leaf_m, t)
            l_sm = ((sca_s.detach() - sca_m) ** 2).sum()  # L_s->m: subject SCA maps are the target
            l_ms = ((tsa_s - tsa_m.detach()) ** 2).sum()  # L_m->s: motion TSA maps are the target
            (g_sub,) = torch.autograd.grad(l_ms, leaf_s)
            (g_mot,) = torch.autograd.grad(l_sm, leaf_m)
        step_sub, step_mot = alpha * g_sub, alpha * g_mot
        got_sub, got_mot = cfg_inputs[2 * i], cfg_inputs[2 * i + 1]  # each branch's CFG pass sees its latent
        for got, step in ((got_sub, step_sub), (got_mot, step_mot)):
            # the same float operations run in both computations (the sampler stops its pass after the
            # last recorded layer, which changes nothing before it), so only the update's own rounding
            # (x - step: one fp32 rounding, u = 2**-24, of |x| + |step|) may differ, with 4x headroom
            bound = 4 * 2.0**-24 * float(x.abs().max() + step.abs().max())
            assert float((got - (x - step)).abs().max()) <= bound
            assert float(step.abs().max()) > 100 * bound, "the step must be far above the bound"
        # the stats log the losses before the update and each branch's relative step (fp32 reductions)
        assert stats.loss_s_to_m[i] == pytest.approx(float(l_sm.detach()), rel=1e-5)
        assert stats.loss_m_to_s[i] == pytest.approx(float(l_ms.detach()), rel=1e-5)
        assert stats.relative_step_sub[i] == pytest.approx(float(step_sub.norm() / x.norm()), rel=1e-5)
        assert stats.relative_step_mot[i] == pytest.approx(float(step_mot.norm() / x.norm()), rel=1e-5)
        assert seen[i][2]["step_sub"] == stats.relative_step_sub[i]
    assert "step_sub" not in seen[2][2], "unguided steps have no guidance to report"
    assert torch.equal(cfg_inputs[4], cfg_inputs[5]), "after tau both branches see x_t"


@pytest.mark.parametrize("output_scale, steps", [(0.0, 10), (0.1, 25)])
def test_ddim_inversion_round_trips(model, monkeypatch, output_scale, steps):
    """Inversion then DDIM sampling (no guidance) returns the latent, level by level.

    Every UNet call is recorded, so each intermediate level is checked, not just the ends (with a
    constant prediction the end-to-end map telescopes: wrong intermediate noise levels cancel).
    The UNet's output layer is scaled: 0 gives a constant prediction ``c``, for which the DDIM
    trajectory is known in closed form, ``x_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) c`` at every
    level (``x0_hat``: ``x_0`` seen from DDIM's data end); 0.1 gives a prediction that depends on x
    (a random UNet's moves with x almost one to one,
    which makes any DDIM inversion drift), where inversion and sampling must visit the same levels.
    """
    import videomage_core.sampling as S

    with torch.no_grad():
        model.unet.conv_out.weight.mul_(output_scale)
    calls, real = [], S.predict_noise
    monkeypatch.setattr(S, "predict_noise", lambda m, x, t, text: calls.append(
        (x[:1].float().clone(), int(t.reshape(-1)[0]))) or real(m, x, t, text))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.nn.functional.avg_pool3d(torch.randn(1, 4, 3, 8, 8, generator=gen), 3, 1, 1) * 2
    xt = ddim_invert(model, x0, steps=steps)
    inverse, calls[:] = list(calls), []
    st = SampleSettings(frames=3, height=64, width=64, steps=steps, cfg=1.0)
    back = ddim_sample(model, "", st, latents=xt)
    forward = list(calls)
    ts = [t for _, t in forward]
    assert [t for _, t in inverse] == ts[::-1], "the inversion evaluates the sampler's timesteps, reversed"
    # level k = the latent at noise level t_k: the inversion's output of its step k, the sampler's
    # input at t_k
    inv_levels = [x for x, _ in inverse[1:]] + [xt]
    smp_levels = [x for x, _ in forward][::-1]
    assert len(inv_levels) == len(smp_levels) == steps
    if output_scale == 0:
        abar = model.scheduler.alphas_cumprod
        c = model.unet.conv_out.bias.detach().float().view(1, -1, 1, 1, 1)
        # DDIM's data end is the level final_alpha_cumprod (abar[0] unless set_alpha_to_one): the
        # predicted x_0 every step keeps is x_0 seen from that level
        a_end = torch.as_tensor(float(model.scheduler.final_alpha_cumprod))
        x0_hat = (x0 - (1 - a_end).sqrt() * c) / a_end.sqrt()
        # each DDIM step (either direction) is ~8 fp32 operations on values of size |x| + |c|, each
        # rounding by at most u = 2**-24 of that; errors add up over the steps
        bound = steps * 8 * 2.0**-24 * float(x0.abs().max() + c.abs().max())
        for k, t in enumerate(ts[::-1]):
            closed = abar[t].sqrt() * x0_hat + (1 - abar[t]).sqrt() * c
            assert float((inv_levels[k] - closed).abs().max()) <= bound, (k, t)
            assert float((smp_levels[k] - closed).abs().max()) <= bound, (k, t)
        assert float((back - x0).abs().max()) <= 2 * bound
    else:
        # DDIM inversion evaluates the prediction one level below where sampling does; the resulting
        # drift grows from the data end (at most 10 % of a level's norm with this smooth prediction
        # at 25 steps); a wrong level or timestep moves a level by a whole step (~ its own size)
        for k in range(steps):
            err = (inv_levels[k] - smp_levels[k]).norm() / smp_levels[k].norm()
            assert err < 0.1, (k, err)
        assert (back - x0).norm() / x0.norm() < 0.1
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


def _two_graph_guidance(model, recorder, sub, mot, x_sub, x_mot, t, alpha, stop_early, *rest):
    """Reference copy of the guidance before the memory change (both branches' graphs alive at
    once, one backward of the summed losses), computing the maps each pass needs as the sampler does:
    the subject's SCA target from a spatial-only pass, its TSA from a temporal-only pass."""
    import videomage_core.sampling as S

    maps = {}
    with recorder, torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad(), adapters_active(model, [sub.adapter]):
            with recorder.recording(x_sub.shape, stop_after_last=True, kinds=("spatial",)):
                predict_noise(model, x_sub, t, sub.text[1:])
            target_sca = sub.sca(recorder)
        leaves = {}
        for name, branch, x, kinds in (("sub", sub, x_sub, ("temporal",)), ("mot", mot, x_mot, None)):
            leaf = x.detach().clone().requires_grad_(True)
            leaves[name] = leaf
            with adapters_active(model, [branch.adapter]):
                with recorder.recording(leaf.shape, stop_after_last=stop_early, kinds=kinds):
                    predict_noise(model, leaf, t.clone(), branch.text[1:].clone())
            maps[name] = (branch.sca(recorder) if kinds is None else target_sca, recorder.temporal_maps())
        loss_s_to_m = spatial_alignment_loss(maps["sub"][0], maps["mot"][0])
        loss_m_to_s = temporal_alignment_loss(maps["sub"][1], maps["mot"][1])
        g_sub, g_mot = torch.autograd.grad(loss_m_to_s + loss_s_to_m, [leaves["sub"], leaves["mot"]],
                                           allow_unused=True)
    new_sub = (x_sub.float() - alpha * g_sub.float()).to(x_sub.dtype)
    new_mot = (x_mot.float() - alpha * g_mot.float()).to(x_mot.dtype)
    return S.GuidedStep(new_sub, new_mot, float(loss_s_to_m.detach()), float(loss_m_to_s.detach()),
                        0.0, 0.0, 0)


class _SavedBytes:
    """Live bytes of tensors autograd saved for backward (what a graph holds), and their peak."""

    def __init__(self):
        self.live = self.peak = 0

    def hooks(self):
        tally = self

        class Held:
            def __init__(self, t):
                self.t, self.n = t, t.numel() * t.element_size()
                tally.live += self.n
                tally.peak = max(tally.peak, tally.live)

            def __del__(self):
                tally.live -= self.n

        return torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_one_graph_at_a_time_leaves_the_latents_unchanged(custom, monkeypatch, checkpointing):
    """SCS builds one branch's graph at a time (optionally checkpointed) and gets the latents of
    today's two-graph guidance; the graph memory it holds is one branch's, not two."""
    import videomage_core.checkpointing as C
    import videomage_core.sampling as S

    st = SampleSettings(frames=3, height=64, width=64, steps=3, seed=4)
    ours_bytes, ref_bytes = _SavedBytes(), _SavedBytes()
    with ours_bytes.hooks():
        ours = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st,
                          SCSSettings(tau=2, alpha0=1e4, gradient_checkpointing=checkpointing))
    recomputed = []
    real_checkpoint = C.checkpoint
    monkeypatch.setattr(C, "checkpoint", lambda *a, **k: recomputed.append(1) or real_checkpoint(*a, **k))
    monkeypatch.setattr(S, "collaborative_guidance", _two_graph_guidance)
    with ref_bytes.hooks():
        ref = scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=2, alpha0=1e4))
    assert not recomputed, "checkpointing is switched off again after SCS"
    # the same float operations on the same inputs in the same order (the graph-free target pass runs
    # the kernels the graph pass runs; recomputation under checkpointing repeats them): equal bits
    assert torch.equal(ours, ref), float((ours - ref).abs().max())
    if checkpointing:
        # checkpointed: the graph keeps only each block's inputs
        assert ours_bytes.peak < 0.5 * ref_bytes.peak / 2, (ours_bytes.peak, ref_bytes.peak)
    else:
        # one graph of two alike (same UNet up to the same layer, only the LoRA layers differ):
        # max(a, b) / (a + b) is 1/2 for equal graphs; 0.6 allows the larger to be 1.5x the smaller
        assert ours_bytes.peak <= 0.6 * ref_bytes.peak, (ours_bytes.peak, ref_bytes.peak)


def test_checkpointed_guidance_recomputes_under_the_branch_adapter(custom, monkeypatch):
    """With gradient checkpointing the guided pass's blocks run under torch.utils.checkpoint."""
    import videomage_core.checkpointing as C

    calls = []
    real_checkpoint = C.checkpoint
    monkeypatch.setattr(C, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    st = SampleSettings(frames=3, height=64, width=64, steps=2, seed=4)
    scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(tau=1, gradient_checkpointing=True))
    assert calls, "the guided pass must be checkpointed"
    assert not any("_vm_forward" in m.__dict__ for m in custom.unet.modules()), "switched off afterwards"


def test_scs_aligns_subject_columns_by_position(model, monkeypatch):
    """Each token's columns map to the superclass word that replaced that very token, never to the
    first occurrence of the word: same superclass twice, the word earlier in the prompt, and
    multi-piece words."""
    import videomage_core.sampling as S

    for token, word in (("<toy>", "toy"), ("<dog>", "dog"), ("<pup>", "dog"), ("<gir>", "giraffe")):
        add_token(model, token, init_word=word)
    tk = model.tokenizer
    supers = {"<toy>": "toy", "<dog>": "dog", "<pup>": "dog", "<gir>": "giraffe"}

    def ids(text):
        return tk(text).input_ids

    def where(text, piece_ids):  # every start of piece_ids in text's ids
        full = ids(text)
        return [i for i in range(len(full)) if full[i:i + len(piece_ids)] == piece_ids]

    dog = tk("dog", add_special_tokens=False).input_ids
    # a superclass word that also stands earlier in the prompt
    twin, tokens, cols_p, cols_t = aligned_subject_columns(tk, "a dog watches a <toy> ride a <dog>", supers)
    assert twin == "a dog watches a toy ride a dog" and tokens == ["<toy>", "<dog>"]
    assert len(dog) == 1 and len(where(twin, dog)) == 2
    assert cols_t[1] == [where(twin, dog)[1]], "the <dog> that was replaced, not the first dog"
    assert cols_p[1] == where("a dog watches a <toy> ride a <dog>", ids("<dog>")[1:2])
    assert cols_t[0] == where(twin, tk("toy", add_special_tokens=False).input_ids) == cols_p[0]
    # two subjects of the same superclass
    twin, tokens, cols_p, cols_t = aligned_subject_columns(tk, "a <dog> and a <pup> play", supers)
    assert twin == "a dog and a dog play" and cols_t == [[p] for p in where(twin, dog)] == cols_p
    # multi-piece superclass word, which also stands earlier in the prompt
    gir = tk("giraffe", add_special_tokens=False).input_ids
    assert len(gir) > 1, "the tiny tokenizer splits 'giraffe' into pieces"
    twin, tokens, cols_p, cols_t = aligned_subject_columns(tk, "a giraffe sees a <gir> and a <dog>", supers)
    second = where(twin, gir)[1]
    assert cols_t[0] == list(range(second, second + len(gir)))
    assert [ids(twin)[i] for i in cols_t[0]] == gir and cols_t[1] == [where(twin, dog)[0]]
    # scs_sample hands exactly these columns to its branches
    seen = {}
    real_branch = S._Branch
    monkeypatch.setattr(S, "_Branch", lambda m, adapter, prompt, columns, neg:
                        seen.setdefault(adapter, columns) and real_branch(m, adapter, prompt, columns, neg))
    inject_lora(model, "sub", "spatial")
    inject_lora(model, "mot", "temporal")
    st = SampleSettings(frames=2, height=64, width=64, steps=1, seed=0)
    scs_sample(model, "a giraffe sees a <gir> and a <dog>", {"<gir>": "giraffe", "<dog>": "dog"},
               "sub", "mot", st, SCSSettings(tau=0))
    assert seen == {"sub": cols_p, "mot": cols_t}


def _recorded_branches(model, monkeypatch):
    """A "<toy>" token, adapters "sub" and "mot", one-step settings, and a dict that records each SCS branch's
    ``(prompt, columns)`` by adapter as the sampler builds it."""
    import videomage_core.sampling as S

    add_token(model, "<toy>", init_word="toy")
    seen = {}
    real_branch = S._Branch
    monkeypatch.setattr(S, "_Branch", lambda m, adapter, prompt, columns, neg:
                        seen.setdefault(adapter, (prompt, columns)) and real_branch(m, adapter, prompt, columns, neg))
    inject_lora(model, "sub", "spatial")
    inject_lora(model, "mot", "temporal")
    return seen, SampleSettings(frames=2, height=64, width=64, steps=1, seed=0)


def test_motion_branch_reads_the_target_prompt_when_asked(model, monkeypatch):
    """``motion_prompt="tokens"`` (beyond the paper): the motion branch gets the very prompt and columns the
    subject branch gets; the default is the paper's superclass twin; anything else is one input error."""
    seen, st = _recorded_branches(model, monkeypatch)
    prompt = "a <toy> rides"
    _, _, cols_p, cols_t = aligned_subject_columns(model.tokenizer, prompt, {"<toy>": "toy"})
    for mode, expected in ((None, ("a toy rides", cols_t)), ("tokens", (prompt, cols_p))):
        seen.clear()
        scs = SCSSettings(tau=0) if mode is None else SCSSettings(tau=0, motion_prompt=mode)
        scs_sample(model, prompt, {"<toy>": "toy"}, "sub", "mot", st, scs)
        assert seen == {"sub": (prompt, cols_p), "mot": expected}
    with pytest.raises(VideoMageInputError, match="motion_prompt"):
        scs_sample(model, prompt, {"<toy>": "toy"}, "sub", "mot", st, SCSSettings(motion_prompt="twin"))


def test_subject_branch_reads_its_own_prompt_when_given(model, monkeypatch):
    """``subject_prompt`` (beyond the paper): the subject branch gets that prompt, with each subject's columns
    in it listed in the target prompt's order (so subject k's maps still meet the motion branch's word k);
    the motion branch keeps the target prompt's twin; a subject prompt missing a token is one input error."""
    seen, st = _recorded_branches(model, monkeypatch)
    add_token(model, "<pet>", init_word="dog")
    supers = {"<toy>": "toy", "<pet>": "dog"}
    prompt, own = "a <toy> orbits a <pet>", "a <pet> chases a <toy>"
    _, _, _, cols_twin = aligned_subject_columns(model.tokenizer, prompt, supers)
    _, order, cols_own, _ = aligned_subject_columns(model.tokenizer, own, supers)
    assert order == ["<pet>", "<toy>"]  # the subject prompt names them the other way round
    scs_sample(model, prompt, supers, "sub", "mot", st, SCSSettings(tau=0, subject_prompt=own))
    assert seen == {"sub": (own, [cols_own[1], cols_own[0]]), "mot": ("a toy orbits a dog", cols_twin)}
    seen.clear()  # with the motion branch on the target prompt itself, it keeps the target's columns
    scs_sample(model, prompt, supers, "sub", "mot", st, SCSSettings(tau=0, subject_prompt=own, motion_prompt="tokens"))
    assert seen["mot"] == (prompt, aligned_subject_columns(model.tokenizer, prompt, supers)[2])
    with pytest.raises(VideoMageInputError, match="subject_prompt"):
        scs_sample(model, prompt, supers, "sub", "mot", st, SCSSettings(subject_prompt="a <toy> alone"))


def test_normalized_step_is_one_relative_step_at_any_size(custom):
    """step_mode "normalized": alpha_t is the relative step ||step|| / ||x|| of both branches at
    any frame count and size; the paper's mode logs its own (size-dependent) relative step."""
    alpha0, tau = 0.01, 2
    want = [alpha0 * math.sqrt(1 - 0.5 * i / 2) for i in range(tau)]  # alpha_t over 3 steps
    for frames, size in ((3, 64), (5, 96)):
        stats = SCSStats()
        st = SampleSettings(frames=frames, height=size, width=size, steps=3, seed=1)
        scs_sample(custom, PROMPT, SUPER, "sub", "mot", st,
                   SCSSettings(tau=tau, alpha0=alpha0, step_mode="normalized"), stats=stats)
        # three fp32 norms over <= 4*5*12*12 elements, summed pairwise: relative error ~ log2(n) u each
        assert stats.relative_step_sub == pytest.approx(want, rel=1e-5)
        assert stats.relative_step_mot == pytest.approx(want, rel=1e-5)
    with pytest.raises(VideoMageInputError, match="step_mode"):
        scs_sample(custom, PROMPT, SUPER, "sub", "mot", st, SCSSettings(step_mode="sum"))


def _fp_model(tiny_model_dir, dtype):
    from videomage_core.model import load_model

    # LoRAs far enough apart that the branches' maps differ by much more than fp16's rounding of
    # them (with B ~ 0.05 the two branches' SCA maps differ by about fp16's own rounding error)
    m = _customize(load_model(tiny_model_dir, dtype=dtype), 0.3)
    twin, _, cols_s, cols_m = aligned_subject_columns(m.tokenizer, PROMPT, SUPER)
    branches = _Branch(m, "sub", PROMPT, cols_s, ""), _Branch(m, "mot", twin, cols_m, "")
    return (m, *branches, AttentionRecorder(m.unet))


def test_fp16_guidance_gives_the_fp32_step(tiny_model_dir, monkeypatch):
    """In fp16 the guidance gradient is loss-scaled: each branch's step agrees with fp32's, where the
    unscaled motion-branch gradient (about 1e-6 per element: subnormal in fp16) does not; a loss
    whose scaled gradient overflows backs the scale off instead of failing."""
    import videomage_core.sampling as S

    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # fp32, as scs_sample keeps
    t = torch.tensor(801)
    steps = {}
    for name in ("fp32", "fp16", "fp16 unscaled"):
        monkeypatch.setattr(S, "FP16_LOSS_SCALE", 1.0 if name == "fp16 unscaled" else 2.0**16)
        m, sub, mot, rec = _fp_model(tiny_model_dir, name[:4])
        g = collaborative_guidance(m, rec, sub, mot, x, x, t, 1e3)
        with rec, torch.enable_grad():
            huge, _, _ = S._branch_gradient(
                m, rec, sub, x, t, lambda sca, tsa: 1e8 * ((tsa - 0.9 * tsa.detach()) ** 2).sum(), True)
        steps[name] = (g.x_sub - x, g.x_mot - x, huge)
    cos = torch.nn.functional.cosine_similarity
    for k in range(3):
        a, b = steps["fp32"][k].flatten(), steps["fp16"][k].flatten()
        # fp16 rounds each of the ~30 operations between the latent and the maps (and back) by up to
        # 2**-11 ~ 5e-4 relative: a few percent on the step at most
        assert float(cos(a, b, 0)) >= 0.99 and float((a - b).norm() / a.norm()) <= 0.05, k
    unscaled = steps["fp16 unscaled"][1].flatten()
    assert float(cos(steps["fp32"][1].flatten(), unscaled, 0)) < 0.9, "without the scale fp16 loses the step"
