"""ShapesWorld pretraining (smoke scale) and the controllability scorer."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from videomage_core.shapesworld import controllability as C
from videomage_core.shapesworld import pretrain as P
from videomage_core.shapesworld.generator import VOCABULARY, sample_single

SMOKE = replace(P.PRESETS["smoke"], steps=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny (overhead-bound): one thread is as fast idle, and far faster when other
    processes share the two cores (OpenMP threads spinning against each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(tmp_path, name, **kw):
    out = tmp_path / name
    kw.setdefault("eval_samples", 0)
    return P.pretrain(out, SMOKE, log=lambda s: None, **kw)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One uninterrupted smoke run (2 VAE steps, 3 UNet steps)."""
    return _run(tmp_path_factory.mktemp("pretrain"), "model")


def test_full_preset_meets_the_map_size_and_factor():
    cfg = P.PRESETS["full"]
    cfg.check()
    assert cfg.map_size == (8, 8) and cfg.vae_factor == 4 and cfg.latent_size == (32, 32)
    with pytest.raises(ValueError, match="attention maps"):
        replace(cfg, height=64, width=64).check()


def test_cpu_preset_records_8x8_maps_at_the_full_resolution_level():
    cfg = P.PRESETS["cpu"]
    cfg.check()
    assert cfg.latent_size == (8, 8) and cfg.map_size == (8, 8)
    assert cfg.attention_levels == ("down_blocks.0", "up_blocks.3")
    rec = P.recommended_settings(cfg)
    assert rec["attention_levels"] == ["down_blocks.0", "up_blocks.3"] and rec["attention_map_size"] == [8, 8]
    words = set(VOCABULARY) | {"{s}", "{subjects}", "{token}"}
    for prompt in [*rec["prior_captions"], rec["appearance_template"], rec["subject_video_prompt"]]:
        assert set(prompt.split()) <= words, prompt  # the engine's prompts in words the model knows
    with pytest.raises(ValueError, match="record_level"):
        replace(cfg, record_level=3).check()


@pytest.mark.parametrize("preset", ["cpu64", "h200"])
def test_second_edition_presets_record_8x8_maps_at_level_one(preset):
    cfg = P.PRESETS[preset]
    cfg.check()
    assert (cfg.height, cfg.width) == (64, 64) and cfg.latent_size == (16, 16) and cfg.map_size == (8, 8)
    assert cfg.attention_levels == ("down_blocks.1", "up_blocks.2")
    # the warm start needs the first edition's architecture
    for field in ("vae_channels", "unet_channels", "unet_layers", "unet_heads", "text_dim", "text_layers"):
        assert getattr(cfg, field) == getattr(P.PRESETS["cpu"], field), field


def test_init_from_keeps_the_vae_and_starts_from_the_unet(smoke, tmp_path):
    from diffusers import AutoencoderKL, UNet3DConditionModel

    other_seed = replace(SMOKE, seed=5)  # a fresh init of this seed is far from the smoke model
    res = P.pretrain(tmp_path / "warm", other_seed, log=lambda s: None, eval_samples=0, init_from=smoke.out,
                     stop_at=1)
    vae = res.state["vae"]
    assert vae["done"] and vae["step"] == 0 and vae["init_from"] == str(smoke.out)
    assert vae["scaling_factor"] == pytest.approx(smoke.state["vae"]["scaling_factor"])
    src = AutoencoderKL.from_pretrained(smoke.out / "vae").state_dict()
    kept = AutoencoderKL.from_pretrained(res.out / "vae").state_dict()
    assert all(torch.equal(src[k], kept[k]) for k in src)  # not retrained
    # one UNet step later the weights are the source's moved by one small step, not a fresh init
    a = UNet3DConditionModel.from_pretrained(smoke.out / "unet").state_dict()
    b = UNet3DConditionModel.from_pretrained(res.out / "unet").state_dict()
    fresh = P.build_modules(other_seed, _tokenizer(res.out))[0].state_dict()
    k = "conv_in.weight"
    assert (b[k] - a[k]).abs().max() < (fresh[k] - a[k]).abs().max() / 10
    card = (res.out / "MODEL_CARD.md").read_text()
    assert "kept from" in card and "starting from" in card
    with pytest.raises(FileNotFoundError, match="init_from"):
        _run(tmp_path, "bad", init_from=tmp_path / "nowhere")


def test_third_edition_preset_has_a_1x1_deepest_level_and_the_first_editions_unet():
    cfg = P.PRESETS["cpu64f8"]
    cfg.check()
    assert (cfg.height, cfg.width) == (64, 64) and cfg.vae_factor == 8 and cfg.latent_size == (8, 8)
    assert cfg.map_size == (8, 8) and cfg.attention_levels == ("down_blocks.0", "up_blocks.3")
    assert cfg.latent_size[0] // 2 ** (len(cfg.unet_channels) - 1) == 1  # deepest level 1x1
    for field in ("unet_channels", "unet_layers", "unet_heads", "text_dim", "text_layers"):
        assert getattr(cfg, field) == getattr(P.PRESETS["cpu"], field), field


def test_init_from_another_vae_architecture_trains_a_vae_and_keeps_every_matching_unet_tensor(smoke, tmp_path):
    """A source with 4 latent channels into a run with 8: the VAE stage runs (the source's cannot be
    kept), conv_in / conv_out stay fresh, every other UNet tensor starts as the source's."""
    from diffusers import UNet3DConditionModel

    wider = replace(SMOKE, latent_channels=8, seed=5)
    logs = []
    res = P.pretrain(tmp_path / "wide", wider, log=logs.append, eval_samples=0, init_from=smoke.out, stop_at=1)
    assert res.state["vae"]["step"] == SMOKE.vae_steps and "init_from" not in res.state["vae"]  # trained
    assert any("another architecture" in m for m in logs)
    assert any("left fresh: conv_in.weight, conv_out.bias, conv_out.weight" in m for m in logs), logs
    a = UNet3DConditionModel.from_pretrained(smoke.out / "unet").state_dict()
    b = UNet3DConditionModel.from_pretrained(res.out / "unet").state_dict()
    fresh = P.build_modules(wider, _tokenizer(res.out))[0].state_dict()
    k = "down_blocks.0.resnets.0.conv1.weight"  # same shape in both: warm-started
    assert (b[k] - a[k]).abs().max() < (fresh[k] - a[k]).abs().max() / 10
    assert b["conv_in.weight"].shape[1] == 8 and b["conv_out.weight"].shape[0] == 8


def _tokenizer(folder):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)


def test_command_line_overrides_reach_the_run_and_a_bad_share_is_refused(monkeypatch, tmp_path, capsys):
    """``--lr`` and ``--p-interaction`` replace the preset's fields (a warm start at a lower peak rate and more
    two-object clips, as the fourth-edition probe ran); a share outside 0..1 is one parser error."""
    seen = {}

    class Done:
        status = "complete"

    monkeypatch.setattr(P, "pretrain", lambda out, cfg, *a, **kw: seen.setdefault("cfg", cfg) and Done)
    # main() sets torch's threads from OMP_NUM_THREADS (make test exports 2): that would outlive this test and
    # undo the module's one thread, so the resume test's runs would reduce in another order than its fixture's
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert P.main(["--out", str(tmp_path / "m"), "--preset", "cpu", "--lr", "5e-4", "--p-interaction", "0.7"]) == 0
    assert seen["cfg"] == replace(P.PRESETS["cpu"], lr=5e-4, p_interaction=0.7)
    with pytest.raises(SystemExit):
        P.main(["--out", str(tmp_path / "m"), "--p-interaction", "1.5"])
    assert "--p-interaction is a share" in capsys.readouterr().err
    seen.clear()
    assert P.main(["--out", str(tmp_path / "m"), "--preset", "cpu", "--p-still-pair", "0.2"]) == 0
    assert seen["cfg"] == replace(P.PRESETS["cpu"], p_still_pair=0.2)
    with pytest.raises(SystemExit):
        P.main(["--out", str(tmp_path / "m"), "--p-still-pair", "1"])
    assert "--p-still-pair is a share" in capsys.readouterr().err


def test_tokenizer_makes_every_caption_word_one_token(smoke):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(smoke.out / "tokenizer", local_files_only=True)
    for w in VOCABULARY:
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    ids = tok("a red circle moving right").input_ids
    assert len(ids) == 2 + 5


def test_pretraining_data_never_shows_held_out_prompts_or_interactions():
    rng = np.random.default_rng(0)
    cfg = replace(SMOKE, p_interaction=0.7)
    _, caps = P.t2v_clips(rng, 150, cfg)
    held = {c.prompt for c in C.HELD_OUT_CELLS}
    assert not held & set(caps)
    assert not any(w in c for c in caps for w in ("orbits", "jumps over", "swap places"))
    assert any(" and " in c for c in caps) and any("moving" in c for c in caps)
    clip = sample_single(rng, "right", C.HELD_OUT_CELLS[0].object_specs()[0], frames=4, height=32, width=32)
    assert C.is_held_out(clip.spec) and clip.caption == C.HELD_OUT_CELLS[0].prompt
    # symmetric interactions are held out in either order
    a, b = C.HELD_OUT_CELLS[8].object_specs()
    assert C.is_held_out(replace(C.HELD_OUT_CELLS[8].spec(4, 32, 32), objects=(b, a)))
    assert not C.is_held_out(C.SEEN_CELLS[0].spec(4, 32, 32))
    _, caps = P.t2v_clips(rng, 60, replace(SMOKE, p_still_pair=0.5))  # the still pairs' family: "{A} and {B}"
    assert not held & set(caps) and any(c.split()[-1] in ("circle", "square", "triangle", "shape") and " and " in c
                                        for c in caps)
    imgs, masks = P.vae_images(rng, 3, SMOKE)
    assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.uint8 and masks.any()


def test_smoke_run_writes_a_loadable_model_that_samples(smoke):
    from videomage_core.diffusion import decode_latents
    from videomage_core.model import load_model
    from videomage_core.sampling import SampleSettings, ddim_sample

    assert smoke.status == "done"
    assert smoke.state["vae"]["step"] == 2 and smoke.state["t2v"]["step"] == 3
    assert len(smoke.state["t2v"]["losses"]) == 3 and 0 < smoke.model_mb < P.MAX_MODEL_MB
    out = smoke.out
    for name in ("model_index.json", "MODEL_CARD.md", "loss_curve.png", "videomage.json"):
        assert (out / name).is_file(), name
    card = (out / "MODEL_CARD.md").read_text()
    assert "held-out prompts" in card and "3 of 3 steps" in card
    model = load_model(out)
    assert model.vae_scale_factor == 4
    assert model.latent_scaling == pytest.approx(smoke.state["vae"]["scaling_factor"])
    lat = ddim_sample(
        model, "a red circle moving right", SampleSettings(frames=4, height=32, width=32, steps=2)
    )
    assert lat.shape == (1, 4, 4, 8, 8)
    frames = decode_latents(model, lat)
    assert frames.shape == (4, 32, 32, 3) and torch.isfinite(frames).all()


def test_resume_continues_the_step_count_and_equals_an_uninterrupted_run(smoke, tmp_path):
    from safetensors.torch import load_file

    first = _run(tmp_path, "model", stop_at=1)
    assert first.status == "paused" and first.state["t2v"]["step"] == 1
    state = json.loads((tmp_path / "model.ckpt" / "state.json").read_text())
    assert state["t2v"]["step"] == 1 and state["t2v"]["checkpoint"] == "t2v-0000001"
    with pytest.raises(FileExistsError):
        _run(tmp_path, "model")
    # a checkpoint carried without its Adam moments still resumes (moments restart)
    lite = tmp_path / "lite.ckpt"
    shutil.copytree(tmp_path / "model.ckpt", lite)
    for f in lite.glob("t2v-*/adam_*.safetensors"):
        f.unlink()
    res = _run(tmp_path, "lite", resume=True, ckpt_dir=lite)
    assert res.status == "done" and res.state["t2v"]["step"] == 3
    assert res.state["t2v"]["optimizer_restarts"] == [1]
    assert sorted(p.name for p in lite.glob("t2v-*/*")) == ["ema.safetensors", "params.safetensors"]
    second = _run(tmp_path, "model", resume=True)
    assert second.status == "done" and second.state["t2v"]["step"] == 3
    assert len(second.state["t2v"]["losses"]) == 3
    assert second.state["t2v"]["losses"] == smoke.state["t2v"]["losses"]
    a = load_file(str(smoke.out / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(second.out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_extend_continues_a_finished_run_with_a_warm_restart(smoke, tmp_path):
    from safetensors.torch import load_file

    shutil.copytree(smoke.out.with_name("model.ckpt"), tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="extend"):
        _run(tmp_path, "model", resume=True, extend=0)
    res = _run(tmp_path, "model", resume=True, extend=2)
    st = res.state["t2v"]
    assert res.status == "done" and st["step"] == 5 and st["total"] == 5 and len(st["losses"]) == 5
    assert st["losses"][:3] == smoke.state["t2v"]["losses"]
    assert st["restarts"] == [{"at": 3, "steps": 2, "peak": SMOKE.lr * 0.5, "warmup": 1}]
    assert st["optimizer_restarts"] == [3]  # a finished run keeps no Adam moments
    assert "warm restart at step 3 for 2 steps" in (res.out / "MODEL_CARD.md").read_text()
    a = load_file(str(smoke.out / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(res.out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="has not finished"):
        P.extend_finished_run({"t2v": {"step": 1, "total": 3}}, SMOKE, 2)


def test_schedule_warm_restart_starts_a_new_warm_up_and_cosine():
    st = {"restarts": [{"at": 100, "steps": 50, "peak": 0.5, "warmup": 10}]}
    assert P.scheduled_lr(st, 99, 100, 1.0, 10, 0.1) == pytest.approx(P.lr_at(99, 100, 1.0, 10, 0.1))
    assert P.scheduled_lr(st, 100, 150, 1.0, 10, 0.1) == pytest.approx(0.05)  # first warm-up step
    assert P.scheduled_lr(st, 109, 150, 1.0, 10, 0.1) == pytest.approx(0.5)  # back at the (half) peak
    assert P.scheduled_lr(st, 150, 150, 1.0, 10, 0.1) == pytest.approx(0.05)  # annealed to min_frac


def test_scorer_is_exact_on_ground_truth():
    cells = [C.HELD_OUT_CELLS[0], C.HELD_OUT_CELLS[4], C.HELD_OUT_CELLS[9], C.HELD_OUT_CELLS[10]]
    rep = C.score_ground_truth(cells, samples_per_cell=2, frames=8, height=64, width=64)
    for m in C.MEASURES:
        assert rep.overall[m]["mean"] == 1.0 and rep.overall[m]["n"] == 8
    assert all(rep.meets_targets.values())
    assert "all cells" in rep.markdown()


def test_batched_sampler_matches_ddim_sample_and_scorer_runs_on_samples(smoke):
    from videomage_core.model import load_model
    from videomage_core.sampling import SampleSettings, ddim_sample

    model = load_model(smoke.out)
    settings = SampleSettings(frames=4, height=32, width=32, steps=2, cfg=3.0)
    prompts = ["a red circle moving right", "a blue square and a green circle move apart"]
    batched = C.sample_batch(model, prompts, [5, 6], settings)
    for i, (p, s) in enumerate(zip(prompts, [5, 6])):
        single = ddim_sample(model, p, replace(settings, seed=s))
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-4, rtol=1e-4)
    cells = [C.HELD_OUT_CELLS[0], C.HELD_OUT_CELLS[8]]
    rep = C.evaluate_controllability(model, cells, samples_per_cell=1, settings=settings, batch=4)
    assert set(rep.cells) == {c.prompt for c in cells}
    for m in C.MEASURES:
        assert rep.overall[m]["n"] == 2 and 0.0 <= rep.overall[m]["mean"] <= 1.0
    d = rep.to_dict()
    assert d["targets"] == C.TARGETS and d["settings"]["samples_per_cell"] == 1
