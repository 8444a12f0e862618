import pytest
import torch

from videomage_core.artifacts import apply_artifact
from videomage_core.diffusion import add_noise, encode_prompts, encode_video, predict_noise
from videomage_core.errors import NonFiniteLossError, TrainingCancelled, VideoMageInputError
from videomage_core.fusion import FusionSettings, fuse_subjects
from videomage_core.lora import adapters_active
from videomage_core.losses import appearance_free_target
from videomage_core.motion import MotionSettings, appearance_prompt, train_motion
from videomage_core.subject import SubjectSettings, train_subject
from videomage_core.tokens import add_token
from videomage_core.training import ParamGroup, run_training


def _images(n=3, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 8, size // 8, generator=gen)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").permute(0, 2, 3, 1)


def _video(frames=4, size=64, seed=0):
    base = _images(1, size, seed)[0]
    return torch.stack([torch.roll(base, shifts=4 * i, dims=1) for i in range(frames)])


def _fixed_loss(model, x0, text, adapters, target_fn=None, draws=6):
    """The diffusion loss over fixed noise and timesteps (a fixed problem to compare states on)."""
    gen = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(50, 950, (x0.shape[0],), generator=gen)
            x_t = add_noise(model, x0, noise, t)
            target = noise if target_fn is None else target_fn(x_t, t, noise)
            with adapters_active(model, adapters):
                total += ((predict_noise(model, x_t, t, text) - target) ** 2).mean().item()
    return total / draws


def _subject_settings(**kw):
    base = dict(token="<toy>", superclass="toy", steps=30, height=64, width=64, lr_lora=1e-2, lr_token=1e-2,
                prior_videos=1, prior_frames=3, prior_steps=2)
    base.update(kw)
    return SubjectSettings(**base)


def test_subject_loop_lowers_its_loss(model, tmp_path):
    images = _images()
    art = train_subject(model, images, _subject_settings(), cache_dir=tmp_path)
    assert model.adapters == {}, "training leaves the model as it was"
    x0 = torch.cat([encode_video(model, images[i:i + 1]) for i in range(3)])
    add_token(model, "<toy>", init_word="toy")  # the untrained state: token at its superclass word
    text = encode_prompts(model, ["A <toy>"] * 3)
    before = _fixed_loss(model, x0, text, [])
    apply_artifact(model, art, "s")
    text = encode_prompts(model, ["A <toy>"] * 3)
    after = _fixed_loss(model, x0, text, ["s"])
    assert after < 0.9 * before, (before, after)
    assert len(art.losses) == 30 and art.train_args["images"] == 3


def test_motion_loop_lowers_its_loss(model):
    video = _video()
    settings = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=30,
                              inversion_steps=5, height=64, width=64, lr_lora=1e-2)
    art = train_motion(model, video, settings)
    assert model.adapters == {}
    apply_artifact(model, art, "m")
    x0 = encode_video(model, video)
    text = encode_prompts(model, ["a toy moving right"])
    text_ap = encode_prompts(model, [appearance_prompt(list(art.tokens))])

    def target(x_t, t, noise):
        with adapters_active(model, []):
            return appearance_free_target(noise, predict_noise(model, x_t, t, text_ap), 0.5)

    before = _fixed_loss(model, x0, text, [], target)
    after = _fixed_loss(model, x0, text, ["m"], target)
    assert after < 0.9 * before, (before, after)
    assert art.info["appearance_prompt"].startswith("A static video of <ref1_")
    assert art.reference_latents.shape == (1, 4, 4, 8, 8)


def _two_subjects(model, tmp_path):
    return [train_subject(model, _images(seed=i), _subject_settings(token=tok, superclass=sc, steps=4),
                          cache_dir=tmp_path)
            for i, (tok, sc) in enumerate([("<toy>", "toy"), ("<dog>", "dog")])]


def _random_subject(model, token, word, seed):
    """A subject whose LoRA is far from zero (so the average of two is far from either)."""
    from helpers import randomize_lora_b
    from videomage_core.artifacts import LoraArtifact
    from videomage_core.lora import delete_lora, inject_lora, lora_state_dict
    from videomage_core.tokens import get_token_embedding

    add_token(model, token, init_word=word)
    inject_lora(model, "tmp", "spatial", seed=seed)
    randomize_lora_b(model, "tmp", std=0.3, seed=seed)
    art = LoraArtifact(kind="subject", scope="spatial", rank=4, alpha=4.0, lora=lora_state_dict(model, "tmp"),
                       tokens={token: get_token_embedding(model, token)}, superclasses={token: word},
                       base_fingerprint=model.fingerprint)
    delete_lora(model, "tmp")
    return art


def _fusion_settings(**kw):
    base = dict(steps=25, frames=3, height=128, width=128, generation_steps=2, videos_per_subject=1,
                cutmix_videos=2, lr_lora=3e-3)
    base.update(kw)
    return FusionSettings(**base)


def test_fusion_loop_lowers_its_loss(model, tmp_path):
    from safetensors.torch import load_file

    subjects = [_random_subject(model, "<toy>", "toy", 1), _random_subject(model, "<dog>", "dog", 2)]
    small = dict(lambda2=0.0, height=64, width=64)  # L_fusion alone: no attention maps needed
    init = fuse_subjects(model, subjects, _fusion_settings(steps=1, lr_lora=0.0, **small), cache_dir=tmp_path)
    fused = fuse_subjects(model, subjects, _fusion_settings(steps=60, **small), cache_dir=tmp_path)
    assert model.adapters == {}
    assert set(fused.tokens) == {"<toy>", "<dog>"} and fused.rank == 8
    for n, subject in enumerate(subjects):
        apply_artifact(model, subject, f"s{n}")
    apply_artifact(model, init, "init")
    apply_artifact(model, fused, "fused")
    cached = [load_file(str(p)) for p in tmp_path.glob("fusion_videos_*.safetensors")]
    assert len(cached) == 2, "each subject's videos are generated once and cached"

    def distill(adapter):
        total = 0.0
        for n, subject in enumerate(subjects):
            token = list(subject.tokens)[0]
            text = encode_prompts(model, [f"a video of a {token}"])

            def teacher(x_t, t, noise, n=n, text=text):
                with adapters_active(model, [f"s{n}"]):
                    return predict_noise(model, x_t, t, text)
            total += sum(_fixed_loss(model, c["latents.0"], text, [adapter], teacher) for c in cached)
        return total

    before, after = distill("init"), distill("fused")
    assert after < 0.9 * before, (before, after)


def test_fusion_attention_regularisation_is_on_by_default(model, tmp_path):
    subjects = [_random_subject(model, "<toy>", "toy", 1), _random_subject(model, "<dog>", "dog", 2)]
    fused = fuse_subjects(model, subjects, _fusion_settings(steps=2), cache_dir=tmp_path)
    assert all(p["L_attn"] > 0 for p in [fused.info["parts"]])
    assert fused.train_args["lambda2"] == 0.6
    assert len(fused.cutmix_preview) == 2 and fused.cutmix_preview[0].shape == (3, 128, 128, 3)


@pytest.mark.parametrize("loop", ["subject", "motion", "fusion"])
def test_resumed_run_equals_uninterrupted(model, tmp_path, loop):
    if loop == "subject":
        def run(**kw):
            return train_subject(model, _images(), _subject_settings(steps=6, lr_lora=1e-3),
                                 cache_dir=tmp_path, **kw)
    elif loop == "motion":
        settings = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=6,
                                  inversion_steps=3, height=64, width=64)

        def run(**kw):
            return train_motion(model, _video(), settings, **kw)
    else:
        subjects = _two_subjects(model, tmp_path)

        def run(**kw):
            return fuse_subjects(model, subjects, _fusion_settings(steps=6, height=64, width=64),
                                 cache_dir=tmp_path, **kw)
    full = run()
    ckpt = tmp_path / f"{loop}.ckpt.safetensors"
    run(checkpoint_path=ckpt, stop_after=3)
    assert ckpt.is_file()
    resumed = run(checkpoint_path=ckpt)
    assert resumed.train_args["resumed_from"] == 3
    assert resumed.losses == full.losses
    for key, value in full.lora.items():
        assert torch.equal(resumed.lora[key], value), key
    for tok, emb in full.tokens.items():
        assert torch.equal(resumed.tokens[tok], emb)


@pytest.mark.parametrize("change", ["settings", "images"])
def test_a_checkpoint_of_another_run_is_refused(model, tmp_path, change):
    ckpt = tmp_path / "subject.ckpt.safetensors"
    train_subject(model, _images(), _subject_settings(steps=4, lr_lora=1e-3), cache_dir=tmp_path,
                  checkpoint_path=ckpt, stop_after=2)
    before = ckpt.read_bytes()
    settings = _subject_settings(steps=4, lr_lora=2e-3 if change == "settings" else 1e-3)
    images = _images(seed=1 if change == "images" else 0)
    with pytest.raises(VideoMageInputError, match=r"^checkpoint: .*another run"):
        train_subject(model, images, settings, cache_dir=tmp_path, checkpoint_path=ckpt)
    assert ckpt.read_bytes() == before, "a refused checkpoint is left as it was"
    assert model.adapters == {}
    # more steps continue the same run
    longer = train_subject(model, _images(), _subject_settings(steps=5, lr_lora=1e-3), cache_dir=tmp_path,
                           checkpoint_path=ckpt)
    assert longer.train_args["resumed_from"] == 2 and len(longer.losses) == 5


def test_a_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "toy.safetensors"
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(3))
    run_training("toy", 2, [ParamGroup("p", [p], 0.1)], lambda s: (((p - 1) ** 2).sum(), {}), gen,
                 checkpoint_path=ckpt, stop_after=1)
    q = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(VideoMageInputError, match=r"^checkpoint: .*does not fit.*\(4,\)"):
        run_training("toy", 2, [ParamGroup("p", [q], 0.1)], lambda s: (((q - 1) ** 2).sum(), {}), gen,
                     checkpoint_path=ckpt)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(VideoMageInputError, match=r"^checkpoint: .*not a readable checkpoint"):
        run_training("toy", 2, [ParamGroup("p", [q], 0.1)], lambda s: (((q - 1) ** 2).sum(), {}), gen,
                     checkpoint_path=ckpt)


def test_non_finite_loss_stops_and_keeps_the_last_good_state(tmp_path):
    p = torch.nn.Parameter(torch.zeros(3))
    gen = torch.Generator().manual_seed(0)
    snapshots = []

    def step_fn(step):
        snapshots.append(p.detach().clone())
        loss = ((p - 1) ** 2).sum()
        return (loss * float("nan") if step == 3 else loss), {}

    ckpt = tmp_path / "c.safetensors"
    with pytest.raises(NonFiniteLossError, match=r"nan at step 4/10.*last good state \(step 3\)"):
        run_training("toy", 10, [ParamGroup("p", [p], 0.1)], step_fn, gen, checkpoint_path=ckpt)
    assert torch.equal(p.detach(), snapshots[3]), "the failing step must not change the weights"
    q = torch.nn.Parameter(torch.zeros(3))
    run_training("toy", 3, [ParamGroup("p", [q], 0.1)], lambda s: (((q - 1) ** 2).sum(), {}), gen,
                 checkpoint_path=ckpt)
    assert torch.equal(q.detach(), snapshots[3]), "the checkpoint holds the last good state"


def test_cancel_stops_within_a_step_and_leaves_the_model_clean(model, tmp_path):
    steps = []

    def cancel():  # the user presses Cancel after the second training step
        return len(steps) >= 2

    with pytest.raises(TrainingCancelled, match="cancelled at step 2/30"):
        train_subject(model, _images(), _subject_settings(), cancel=cancel, cache_dir=tmp_path,
                      callback=lambda info: steps.append(info.step) if info.stage == "subject" else None)
    assert steps == [1, 2]
    assert model.adapters == {}
    assert not any(p.requires_grad for p in model.unet.parameters())


@pytest.mark.parametrize("loop", ["subject", "motion", "fusion"])
def test_gradient_checkpointing_gives_the_same_training(model, tmp_path, loop):
    """Checkpointed blocks are recomputed during backward with the same adapters and attention."""
    def run(ckpt):
        if loop == "subject":
            return train_subject(model, _images(), _subject_settings(steps=2, gradient_checkpointing=ckpt),
                                 cache_dir=tmp_path)
        if loop == "motion":
            st = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=2,
                                inversion_steps=1, height=64, width=64, gradient_checkpointing=ckpt)
            return train_motion(model, _video(), st)
        subjects = [_random_subject(model, "<toy>", "toy", 1), _random_subject(model, "<dog>", "dog", 2)]
        return fuse_subjects(model, subjects, _fusion_settings(steps=2, gradient_checkpointing=ckpt),
                             cache_dir=tmp_path)

    plain, checked = run(False), run(True)
    assert checked.losses == pytest.approx(plain.losses, rel=1e-5)
    for key, value in plain.lora.items():
        assert torch.allclose(checked.lora[key], value, atol=1e-6), key
