"""Wan (a DiT with no temporal layers, flow matching, umT5): every stage on a tiny Wan, and each choice
the README's "Wan" section documents (LoRA split, attention maps, flow targets, the text layout)."""
from __future__ import annotations

import pytest
import torch

from videomage_core.attention import AttentionRecorder
from videomage_core.bases import wan
from videomage_core.diffusion import (add_noise, encode_prompts, encode_video, predict_noise, sample_timesteps,
                                      training_target)
from videomage_core.errors import VideoMageInputError
from videomage_core.lora import inject_lora, lora_layers
from videomage_core.sampling import SampleSettings, SCSSettings, ddim_sample, initial_noise

from helpers import randomize_lora_b
from test_bases import _images
from test_bases import _video as _base_video


@pytest.fixture()
def wan_model(wan_model_dir):
    from videomage_core.model import load_model

    return load_model(wan_model_dir)


def _video(frames=9, size=64):  # a Wan video: 4k + 1 frames
    return _base_video(frames, size)


def test_wan_folder_loads_as_the_wan_family_with_its_defaults(wan_model):
    m = wan_model
    assert m.family.NAME == "wan" and type(m.unet).__name__ == "WanTransformer3DModel"
    assert m.vae_scale_factor == 8 and m.attention_levels == ("blocks.1", "blocks.2")  # 4 blocks: the middle two
    assert m.default("cfg", 9.0) == 5.0 and m.default("frames", 24) == 9  # videomage.json's 9, Wan's 4k + 1


def test_wan_plain_sampler_matches_wan_pipeline(wan_model):
    """Same noise, same UniPC flow scheduler, same text layout (umT5 states, zeros after each prompt).
    The loops differ only in batching: ours runs [uncond, cond] as one batch, WanPipeline two calls, so
    fp32 kernels reduce in a different order: each step's velocity differs by a few fp32 ulps (6e-8
    relative), amplified by CFG (2 * 5 - 1 = 9) over 4 steps and the UniPC multistep history: well under
    1e-5 of max|x| (measured 5e-7); a wrong timestep, CFG term or padding moves the result by O(1)."""
    from diffusers import WanPipeline

    m = wan_model
    st = SampleSettings(frames=9, height=64, width=64, steps=4, cfg=5.0, seed=3)
    latents = initial_noise(m, st)
    ours = ddim_sample(m, "a toy rides a dog", st, latents=latents)
    pipe = WanPipeline(tokenizer=m.tokenizer, text_encoder=m.text_encoder, transformer=m.unet, vae=m.vae,
                       scheduler=m.scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt="a toy rides a dog", negative_prompt="", height=64, width=64, num_frames=9,
               num_inference_steps=4, guidance_scale=5.0, latents=latents.float().clone(),
               output_type="latent").frames
    assert ours.shape == out.shape == (1, 16, 3, 8, 8)
    assert (ours - out).abs().max() <= 1e-5 * float(out.abs().max()), (ours - out).abs().max()


def test_flow_matching_noising_and_target_are_one_straight_path(wan_model):
    """x_t = (1 - s) x0 + s eps and v = eps - x0: x_t - s v = x0 and x_t + (1 - s) v = eps (fp32 exact to
    a few ulps); training timesteps are t = 1000 s with s in (0, 1), shifted towards noise (shift 3)."""
    m = wan_model
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 16, 3, 8, 8, generator=gen).unbind(0)
    t = sample_timesteps(m, 4000, gen)
    assert t.dtype == torch.float32 and 0 <= float(t.min()) and float(t.max()) < 1000
    assert float((t / 1000).median()) > 0.6  # shift 3: median sigma 3 * 0.5 / 2 = 0.75
    s = torch.tensor([250.0])
    x_t = add_noise(m, x0[None], eps[None], s)
    v = training_target(m, x0[None], eps[None])
    assert torch.allclose(x_t - 0.25 * v, x0[None], atol=1e-6) and torch.allclose(x_t + 0.75 * v, eps[None], atol=1e-6)


def test_text_is_umt5_states_then_zeros_and_tokens_live_in_its_input_table(wan_model):
    from videomage_core.tokens import add_token, token_parameters, word_positions

    m = wan_model
    text = encode_prompts(m, ["a toy", ""])
    assert text.shape == (2, 512, 32)
    n = len(m.tokenizer("a toy").input_ids)  # "a", "toy", end token
    assert n == 3 and text[0, :n].abs().sum(-1).gt(0).all() and text[0, n:].abs().max() == 0
    add_token(m, "<my_toy>", init_word="toy")
    assert word_positions(m.tokenizer, "a <my_toy> rides", ["<my_toy>"]) == [[1]]  # no start token in T5
    (row,) = token_parameters(m, ["<my_toy>"])
    before = encode_prompts(m, ["a <my_toy> rides"])
    with torch.no_grad():
        row.add_(1.0)
    after = encode_prompts(m, ["a <my_toy> rides"])
    assert not torch.allclose(before, after)
    # The same batch again, so the same kernels on the same shapes: adding a token must leave every other
    # prompt's encoding bit for bit. (A batch of one against a row of a batch of two is not bitwise equal on
    # every CPU: oneDNN may block the matmuls differently by batch size.)
    assert torch.equal(encode_prompts(m, ["a toy", ""]), text)


def test_subject_lora_trains_cross_attention_and_ffn_motion_lora_only_self_attention_query_key(wan_model):
    m = wan_model
    inject_lora(m, "s", "spatial")
    inject_lora(m, "t", "temporal")
    spatial = {n.split(".", 2)[2] for n, layer in lora_layers(m.unet) if "s" in layer.lora_A}
    temporal = {n.split(".", 2)[2] for n, layer in lora_layers(m.unet) if "t" in layer.lora_A}
    assert spatial == {"attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"}
    assert temporal == {"attn1.to_q", "attn1.to_k"}


def test_a_motion_lora_changes_where_tokens_attend_never_what_they_read(wan_model):
    """On a one-token video (1 latent frame of 2 x 2 pixels of latent = one 2 x 2 patch), each
    self-attention has a single key, so its weights are 1 whatever q and k are: a query/key LoRA cannot
    change the output at all, bit for bit. It can only redistribute attention between tokens that the
    base model already reads (its values), the structural reason it cannot write a subject's appearance.
    A subject LoRA (cross-attention + FFN) does change that output."""
    m = wan_model
    x = torch.randn(1, 16, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    text = encode_prompts(m, ["a toy"])
    t = torch.tensor(500.0)
    base = predict_noise(m, x, t, text)
    for scope in ("temporal", "spatial"):
        inject_lora(m, scope, scope)
        randomize_lora_b(m, scope, std=0.5)
        out = predict_noise(m, x, t, text)
        from videomage_core.lora import delete_lora

        delete_lora(m, scope)
        assert torch.equal(out, base) == (scope == "temporal"), scope
    # on a real video (several frames and positions) the motion LoRA does change the output
    inject_lora(m, "t", "temporal")
    randomize_lora_b(m, "t", std=0.5)
    video = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    from videomage_core.lora import adapters_active

    with adapters_active(m, []):
        plain = predict_noise(m, video, t, text)
    assert not torch.allclose(predict_noise(m, video, t, text), plain)


def _full_attention_reference(attn, hidden, rotary):
    """Explicit softmax(q k^T / sqrt(D)) over every token (what the recorder must never build at size)."""
    q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(hidden)).unflatten(2, (attn.heads, -1))
    q, k = wan._rotate(q, *rotary), wan._rotate(k, *rotary)
    return torch.einsum("bshd,bthd->bhst", q, k) * q.shape[-1] ** -0.5


def test_tsa_is_self_attention_restricted_to_one_position_across_frames_and_the_forward_is_unchanged(wan_model):
    """TSA[p, f, g] = softmax over g of the full self-attention score between token (f, p) and token
    (g, p): built from the full S x S scores on this tiny model, it equals the recorder's per-position
    map (float32, 1e-5: a softmax of the same dot products summed in another order). The recording
    processor returns what WanAttnProcessor returns (same SDPA), so recording changes no output."""
    m = wan_model
    x = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    text = encode_prompts(m, ["a toy rides a dog"])
    t = torch.tensor(700.0)
    plain = predict_noise(m, x, t, text)
    captured = {}
    block = m.unet.blocks[1]
    hook = block.attn1.register_forward_pre_hook(
        lambda mod, args: captured.update(hidden=args[0], rotary=args[3]))
    rec = AttentionRecorder(m.unet)
    with rec, rec.recording(x.shape):
        recorded = predict_noise(m, x, t, text)
    hook.remove()
    assert torch.allclose(recorded, plain, atol=1e-6)
    scores = _full_attention_reference(block.attn1, captured["hidden"], captured["rotary"])  # (1, H, S, S)
    frames, positions = 3, 16
    idx = torch.arange(frames)[:, None] * positions + torch.arange(positions)[None]  # (F, P) token index
    same_pos = scores[:, :, idx.T[:, :, None], idx.T[:, None, :]]  # (1, H, P, F, F)
    expected = same_pos.softmax(-1).mean(1).reshape(positions, frames, frames)
    assert torch.allclose(rec.maps["blocks.1.attn1"], expected, atol=1e-5)
    sca = rec.spatial_maps()
    assert sca.shape == (1, 3, 512, 4, 4)
    assert torch.allclose(sca.sum(2), torch.ones_like(sca.sum(2)), atol=1e-5), "SCA rows: probabilities over 512"
    tsa = rec.temporal_maps()
    assert tsa.shape == (1, 16, 3, 3)


def test_the_guided_pass_stops_after_the_last_recorded_block(wan_model):
    m = wan_model
    ran = []
    hooks = [b.register_forward_hook(lambda mod, a, o, i=i: ran.append(i)) for i, b in enumerate(m.unet.blocks)]
    rec = AttentionRecorder(m.unet, levels=("blocks.0",))
    x = torch.randn(1, 16, 3, 8, 8)
    with rec, rec.recording(x.shape, stop_after_last=True):
        predict_noise(m, x, torch.tensor(500.0), encode_prompts(m, ["a toy"]))
    for h in hooks:
        h.remove()
    assert ran == [] and "blocks.0.attn2" in rec.maps  # stopped inside block 0, after its cross-attention


def test_images_are_one_latent_frame_and_videos_need_4k_plus_1_frames(wan_model):
    m = wan_model
    assert encode_video(m, _images(1)).shape == (1, 16, 1, 8, 8)
    assert encode_video(m, _video(9)).shape == (1, 16, 3, 8, 8)
    with pytest.raises(VideoMageInputError, match="frames.*4k \\+ 1"):
        ddim_sample(m, "a toy", SampleSettings(frames=8, height=64, width=64, steps=1))


def test_every_stage_runs_on_wan(wan_model, tmp_path):
    """Subject (LoRA + umT5 token + prior videos), motion (appearance-free velocity target + inversion),
    fusion (average of deltas, L_fusion, L_attn on latent-frame masks), SCS and w/o SCS with the flow
    noise prior: the method code of ZeroScope and AnimateDiff, unchanged."""
    from videomage_core.fusion import FusionSettings, fuse_subjects
    from videomage_core.motion import MotionSettings, train_motion
    from videomage_core.pipeline import generate_video
    from videomage_core.subject import SubjectSettings, train_subject

    m = wan_model
    subjects = [train_subject(m, _images(seed=i), SubjectSettings(
        token=tok, superclass=word, steps=2, height=64, width=64, prior_videos=1, prior_frames=8, prior_steps=2,
        seed=i), cache_dir=tmp_path) for i, (tok, word) in enumerate([("<toy>", "toy"), ("<dog>", "dog")])]
    motion = train_motion(m, _video(), MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",),
                                                      steps=2, inversion_steps=1, height=64, width=64, frames=9))
    fused = fuse_subjects(m, subjects, FusionSettings(steps=2, frames=8, height=64, width=64, generation_steps=2,
                                                      videos_per_subject=1, cutmix_videos=1), cache_dir=tmp_path)
    for art in (*subjects, motion, fused):
        assert art.base == "wan" and art.losses and all(v == v for v in art.losses)
    assert fused.info["parts"]["L_attn"] > 0
    assert motion.reference_latents.shape == (1, 16, 3, 8, 8)
    assert m.adapters == {}
    st = SampleSettings(frames=9, height=64, width=64, steps=3, seed=0)
    for mode in ("scs", "wo_scs"):
        frames = generate_video(m, fused, motion, "a <toy> rides a <dog>", st, mode=mode, scs=SCSSettings(tau=2),
                                noise_prior_beta=0.3)
        assert frames.shape == (9, 64, 64, 3) and torch.isfinite(frames).all()
    assert m.adapters == {}


def test_a_clip_shorter_than_the_frames_asked_trains_on_the_longest_4k_plus_1_prefix_it_has(wan_model):
    from videomage_core.motion import MotionSettings, train_motion

    art = train_motion(wan_model, _video(8), MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",),
                                                            steps=1, inversion_steps=0, height=64, width=64,
                                                            frames=33))
    assert art.info["motion_frames"] == 5 and art.reference_latents.shape[2] == 2  # 8 frames -> 5 -> 2 latent


def _wan22_folder(folder):
    """A tiny folder of Wan 2.2 TI2V 5B's layout: a 48-channel DiT, the Wan 2.2 VAE (residual, 2x2 pixel
    patches, 16x spatial compression), ``expand_timesteps`` (a timestep per token, as WanPipeline runs it)."""
    import json

    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from videomage_core.bases.wan_tokenizer import build_tiny_umt5_tokenizer, tiny_pieces

    c = wan.tiny_components(seed=0, vocab_size=len(tiny_pieces()))
    c["unet"] = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
                                      in_channels=48, out_channels=48, text_dim=32, freq_dim=32, ffn_dim=128,
                                      num_layers=4, cross_attn_norm=True, rope_max_seq_len=1024)
    c["vae"] = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, is_residual=True, in_channels=12,
                                out_channels=12, patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48,
                                latents_std=[1.0] * 48)
    build_tiny_umt5_tokenizer(folder.parent / "tok22")
    wan.save_folder(folder, c, folder.parent / "tok22")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "expand_timesteps": True}))
    return folder


def test_a_wan22_ti2v_folder_samples_as_wan_pipeline_and_trains(tmp_path):
    """Wan 2.2 TI2V 5B as a diffusers folder: for text-to-video every token has the same timestep, which the
    engine passes once per video (the DiT broadcasts it): WanPipeline with expand_timesteps gives the same
    latents to fp32 rounding (1e-5 of max|x|, as the 2.1 test); 16x compression, 48 channels."""
    from diffusers import WanPipeline

    from videomage_core.model import load_model
    from videomage_core.subject import SubjectSettings, train_subject

    m = load_model(_wan22_folder(tmp_path / "wan22"))
    assert m.vae_scale_factor == 16
    st = SampleSettings(frames=9, height=64, width=64, steps=3, cfg=5.0, seed=3)
    latents = initial_noise(m, st)
    assert latents.shape == (1, 48, 3, 4, 4)
    ours = ddim_sample(m, "a toy rides a dog", st, latents=latents)
    pipe = WanPipeline(tokenizer=m.tokenizer, text_encoder=m.text_encoder, transformer=m.unet, vae=m.vae,
                       scheduler=m.scheduler, expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt="a toy rides a dog", negative_prompt="", height=64, width=64, num_frames=9,
               num_inference_steps=3, guidance_scale=5.0, latents=latents.float().clone(), output_type="latent").frames
    assert (ours - out).abs().max() <= 1e-5 * float(out.abs().max())
    art = train_subject(m, _images(2), SubjectSettings(token="<toy>", superclass="toy", steps=1, height=64, width=64),
                        aux_videos=[(_video(9), "a toy")])
    assert art.base == "wan" and art.losses[0] == art.losses[0]


def test_a_two_expert_wan22_folder_is_refused_by_name(tmp_path):
    import json
    import shutil

    from videomage_core.model import load_model

    folder = _wan22_folder(tmp_path / "a14b")
    shutil.copytree(folder / "transformer", folder / "transformer_2")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "boundary_ratio": 0.875}))
    with pytest.raises(VideoMageInputError, match="two-expert Wan 2.2") as err:
        load_model(folder)
    assert err.value.input_name == "model_path"
