import re

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from videomage_core.artifacts import apply_artifact
from videomage_core.diffusion import add_noise, encode_prompts, encode_video, predict_noise
from videomage_core.errors import NonFiniteLossError, TrainingCancelled, VideoMageInputError
from videomage_core.fusion import FusionSettings, fuse_subjects
from videomage_core.lora import active_adapters, adapters_active
from videomage_core.losses import appearance_free_target
from videomage_core.motion import MotionSettings, appearance_prompt, train_motion
from videomage_core.subject import SubjectSettings, train_subject
from videomage_core.tokens import add_token, token_embeddings
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



def _trainable(model) -> list:
    """The weights being trained right now (LoRA factors and token rows require grad)."""
    return [p for m in (model.unet, model.text_encoder) for p in m.parameters() if p.requires_grad]


class _GradientLedger:
    """Spies on named loss functions of an engine module and on the first optimiser step.

    At the first step each spied loss's own gradient w.r.t. the trained weights is taken (the graph is
    kept for the engine's backward); when the optimiser then steps, its gradient is checked to be
    exactly ``sum(weights[name] * grad(name))`` (:meth:`check`), so a broken objective fails at once.
    Use as a context manager (the optimiser hook is global).
    """

    def __init__(self, monkeypatch, model, module, weights: dict, min_share: dict):
        self.model = model
        self.weights, self.min_share = weights, min_share
        names = list(weights)
        self.parts = {n: [] for n in names}
        self.lora_ids = set()
        self.step_grads = None
        for name in names:
            monkeypatch.setattr(module, name, self._spy(name, getattr(module, name)))

    def __enter__(self):
        self._handle = register_optimizer_step_pre_hook(self._on_step)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def _spy(self, name, fn):
        def wrapped(*args, **kwargs):
            loss = fn(*args, **kwargs)
            if self.step_grads is None:
                assert loss.requires_grad, f"{name} does not depend on the weights being trained"
                params = _trainable(self.model)
                self.lora_ids |= {id(p) for p in self.model.unet.parameters() if p.requires_grad}
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                self.parts[name].append({id(p): torch.zeros_like(p) if g is None else g
                                         for p, g in zip(params, grads)})
            return loss
        return wrapped

    def _on_step(self, optimizer, args, kwargs):
        if self.step_grads is None:
            self.step_grads = {id(p): torch.zeros_like(p) if p.grad is None else p.grad.clone()
                               for g in optimizer.param_groups for p in g["params"]}
            self.check(self.weights, self.min_share)

    def check(self, weights: dict, min_share: dict) -> None:
        """The first step's gradient == sum of ``weights[name] * grad(name)``; each part in ``min_share``
        carries at least that share of the gradient's norm on the LoRA (so dropping it is visible)."""
        assert self.step_grads is not None, "no optimiser step was taken"
        for name in weights:
            assert self.parts[name], f"{name} was never computed"
        ids = list(self.step_grads)
        expected = torch.cat([sum(w * g[i] for name, w in weights.items() for g in self.parts[name]).flatten()
                              for i in ids])
        got = torch.cat([self.step_grads[i].flatten() for i in ids])
        # the same fp32 operations as the engine's backward passes, only summed in another order:
        # each element differs by a few roundings of 2^-24, far below 1e-5 of the norm
        err = float((got - expected).norm() / expected.norm())
        self.measured = {"relative_difference": err}
        assert err < 1e-5, f"the step's gradient is not the objective's: relative difference {err:.3g}"
        lora = [i for i in ids if i in self.lora_ids]
        total = float(torch.cat([self.step_grads[i].flatten() for i in lora]).norm())
        for name, share in min_share.items():
            part = float(torch.cat([sum(weights[name] * g[i] for g in self.parts[name]).flatten()
                                    for i in lora]).norm())
            self.measured[name] = part / total
            assert part > share * total, f"{name} barely reaches the LoRA ({part:.3g} of {total:.3g})"

def _subject_settings(**kw):
    base = dict(token="<toy>", superclass="toy", steps=30, height=64, width=64, lr_lora=1e-2, lr_token=1e-2,
                prior_videos=1, prior_frames=3, prior_steps=2)
    base.update(kw)
    return SubjectSettings(**base)


def test_subject_loop_lowers_its_loss(model, tmp_path, monkeypatch):
    """Each step descends L_sub + lambda1 L_reg, with both parts through the LoRA being trained (its
    gradient is exactly that sum), and 30 steps lower the subject's diffusion loss."""
    import videomage_core.subject as S

    images = _images()
    # 0.01: L_reg carries 20 % of the first step's LoRA gradient norm here (measured; the sum matched
    # exactly), so without it the step would differ by far more than the 1e-5 the sum is checked to
    with _GradientLedger(monkeypatch, model, S, {"subject_loss": 1.0, "regularization_loss": 0.25},
                         {"regularization_loss": 0.01}) as ledger:
        art = train_subject(model, images, _subject_settings(), cache_dir=tmp_path)
    assert ledger.step_grads is not None, "no optimiser step was taken"
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


def test_motion_loop_lowers_its_loss(model, monkeypatch):
    """The LoRA stage's appearance prediction is the frozen base model's (motion LoRA off) on c_ap with
    the learned reference tokens, the tokens stay frozen while the LoRA trains, and 30 steps lower
    L_mot against that appearance-free target."""
    import videomage_core.motion as M

    video = _video()
    settings = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=30,
                              inversion_steps=5, height=64, width=64, lr_lora=1e-2)
    real = M.predict_noise
    calls, optimisers = [], {}

    def spy(m, x, t, text):
        out = real(m, x, t, text)
        if x.shape[2] > 1:  # the LoRA stage (the inversion sees single frames)
            rows = token_embeddings(m).rows
            call = {"grad": torch.is_grad_enabled(), "text": text.detach().clone(),
                    "adapters": active_adapters(m), "rows": [r.detach().clone() for r in rows],
                    "rows_trainable": [r.requires_grad for r in rows], "row_ids": {id(r) for r in rows}}
            if not call["grad"] and sum(not c["grad"] for c in calls) == 2:  # step 3: the LoRA is non-zero
                with torch.no_grad(), adapters_active(m, []):
                    call["base_gap"] = float((real(m, x, t, text) - out).abs().max())
                with torch.no_grad(), adapters_active(m, list(m.adapters)):
                    call["lora_gap"] = float((real(m, x, t, text) - out).abs().max())
            calls.append(call)
        return out

    monkeypatch.setattr(M, "predict_noise", spy)
    def on_step(opt, args, kwargs):  # which weights each stage's optimiser steps
        optimisers.setdefault(id(opt), {id(p) for g in opt.param_groups for p in g["params"]})

    handle = register_optimizer_step_pre_hook(on_step)
    try:
        art = train_motion(model, video, settings)
    finally:
        handle.remove()
    assert model.adapters == {}
    appearance = [c for c in calls if not c["grad"]]
    assert len(appearance) == 30 and len(calls) == 60, "one appearance and one motion prediction per step"
    probe = appearance[2]
    # the same call twice on the same inputs is bit-identical on a CPU; the LoRA moves it by 0.17 here
    assert probe["base_gap"] == 0.0, "the appearance prediction must have the motion LoRA off"
    assert probe["lora_gap"] > 1e-5, "(the check can see the LoRA)"
    assert all(len(c["adapters"]) == 1 for c in calls if c["grad"]), "L_mot's prediction has the LoRA on"

    tokens = list(art.tokens)
    c_ap = appearance_prompt(tokens)
    assert art.info["appearance_prompt"] == c_ap and c_ap.startswith("A static video of <ref1_")
    add_token(model, tokens[0], init_word="toy")  # the tokens before the inversion
    untrained = encode_prompts(model, [c_ap])
    apply_artifact(model, art, "m")  # the learned tokens
    learned = encode_prompts(model, [c_ap])
    # identical tokenisation and weights give bit-identical encodings (measured: 0); 5 inversion steps
    # at lr 1e-3 move the encoding by 0.23, so the bounds tell them apart by orders of magnitude
    assert float((learned - untrained).abs().max()) > 1e-5, "(the inversion moved the tokens)"
    for c in appearance:
        assert float((c["text"] - learned).abs().max()) <= 1e-6, "c_ap must carry the learned tokens"

    lora_opt = list(optimisers.values())[-1]
    assert len(optimisers) == 2 and not (lora_opt & calls[0]["row_ids"]), "the LoRA stage steps no token"
    for c in calls:
        assert not any(c["rows_trainable"]), "the tokens must be frozen while the LoRA trains"
        for row, final in zip(c["rows"], art.tokens.values()):
            assert torch.equal(row, final.to(row)), "a token changed while the LoRA trained"

    x0 = encode_video(model, video)
    text = encode_prompts(model, ["a toy moving right"])

    def target(x_t, t, noise):
        with adapters_active(model, []):
            return appearance_free_target(noise, predict_noise(model, x_t, t, learned), 0.5)

    before = _fixed_loss(model, x0, text, [], target)
    after = _fixed_loss(model, x0, text, ["m"], target)
    assert after < 0.9 * before, (before, after)
    assert art.reference_latents.shape == (1, 4, 4, 8, 8)


def test_motion_samples_its_frames_uniformly_over_the_clip(model):
    """A longer clip is sampled (never stacked), the frames are recorded, and a shorter one is used whole."""
    video = _video(frames=10)
    base = dict(motion_prompt="a toy moving right", reference_words=("toy",), steps=1, inversion_steps=0,
                height=64, width=64)
    art = train_motion(model, video, MotionSettings(frames=4, **base))
    assert art.train_args["frame_indices"] == [0, 3, 6, 9] and art.train_args["motion_frames"] == 4
    assert art.train_args["frames"] == 4 and art.train_args["reference_frames"] == 10
    assert art.info["frame_indices"] == [0, 3, 6, 9]
    # the stored clip is exactly those frames' latents (encode_video is deterministic)
    assert torch.equal(art.reference_latents, encode_video(model, video[[0, 3, 6, 9]]).float())
    short = _video(frames=6)
    default = train_motion(model, short, MotionSettings(**base))  # the model's default (its videomage.json: 8)
    assert default.train_args["frames"] == model.default("frames", 24) == 8
    assert default.train_args["frame_indices"] == list(range(6)), "a shorter clip is used whole"
    assert default.reference_latents.shape[2] == 6


def test_noise_prior_keeps_the_motion_timing(model, monkeypatch):
    """The noise prior inverts the motion's own frames at its frame count, and selects (never blends)
    frames at another count."""
    import videomage_core.sampling as S
    from videomage_core.sampling import SampleSettings

    seen = []
    monkeypatch.setattr(S, "inverted_reference", lambda m, ref, steps: seen.append(ref.float()) or ref)
    ref = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    for frames in (6, 4, 9):
        S.noise_prior_latents(model, SampleSettings(frames=frames, height=64, width=64, steps=2), ref, 0.3)
    same, fewer, more = seen
    assert torch.equal(same, ref), "at the motion's frame count the prior sees its clip unchanged"
    assert torch.equal(fewer, ref[:, :, :4]), "fewer frames: the first ones, at the same speed"
    assert torch.equal(more, ref[:, :, [0, 1, 1, 2, 3, 3, 4, 4, 5]]), "more frames: repeats, no blends"


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


def test_fusion_attention_regularisation_is_on_by_default(model, tmp_path, monkeypatch):
    """By default each step descends L_fusion + 0.6 L_attn, with L_attn's gradient reaching the fused
    LoRA, on each token's own attention column of the CutMix caption."""
    import videomage_core.fusion as Fu

    subjects = [_random_subject(model, "<toy>", "toy", 1), _random_subject(model, "<dog>", "dog", 2)]
    recorders, prompts, texts, checked = [], {}, [], []
    real_recorder, real_encode, real_predict, real_loss = (Fu.AttentionRecorder, Fu.encode_prompts,
                                                          Fu.predict_noise, Fu.attention_mask_loss)

    def recorder(*args, **kwargs):
        recorders.append(real_recorder(*args, **kwargs))
        return recorders[-1]

    def encode(m, batch):
        out = real_encode(m, batch)
        prompts.update({p: out[i:i + 1].detach() for i, p in enumerate(batch)})
        return out

    def predict(m, x, t, text):
        texts.append(text.detach())
        return real_predict(m, x, t, text)

    def loss(sca, masks):  # each map must be its token's column of the caption just predicted
        caption = next(p for p, e in prompts.items() if torch.equal(e, texts[-1]))
        ids = model.tokenizer(caption).input_ids
        maps = recorders[-1].spatial_maps()
        for k, token in enumerate(re.findall(r"<[^>]+>", caption)):
            col = ids.index(model.tokenizer.convert_tokens_to_ids(token))
            # the same recorded maps, indexed: bit-identical when the column is right
            assert torch.equal(sca[k], maps[:, :, [col]].mean(2)), f"{token} is not read from column {col}"
            others = [c for c in range(1, len(ids) - 1) if c != col]
            gap = min(float((maps[:, :, c] - sca[k]).abs().max().detach()) for c in others)
            assert gap > 1e-6, "(the check can tell columns apart)"
            checked.append(token)
        return real_loss(sca, masks)

    monkeypatch.setattr(Fu, "AttentionRecorder", recorder)
    monkeypatch.setattr(Fu, "encode_prompts", encode)
    monkeypatch.setattr(Fu, "predict_noise", predict)
    monkeypatch.setattr(Fu, "attention_mask_loss", loss)
    # 0.01: L_attn carries 99.8 % of the first step's LoRA gradient norm (measured; the averaged init
    # reproduces the teachers, so L_fusion's is near 0): a detached L_attn leaves the sum off by ~1
    with _GradientLedger(monkeypatch, model, Fu, {"fusion_loss": 0.5, "attention_mask_loss": 0.6},
                         {"attention_mask_loss": 0.01}) as ledger:
        fused = fuse_subjects(model, subjects, _fusion_settings(steps=2), cache_dir=tmp_path)
    assert ledger.step_grads is not None and len(checked) == 4, checked
    assert all(p["L_attn"] > 0 for p in [fused.info["parts"]])
    assert fused.train_args["lambda2"] == 0.6
    assert len(fused.cutmix_preview) == 2 and fused.cutmix_preview[0].shape == (3, 128, 128, 3)


@pytest.mark.parametrize("loop", ["subject", "motion", "fusion"])
def test_resumed_run_equals_uninterrupted(model, tmp_path, loop, one_thread):
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


def test_a_checkpoint_path_never_overwrites_what_is_not_this_runs_checkpoint(model, tmp_path):
    """--checkpoint pointing at a trained artifact, or at another stage's checkpoint, is refused and the
    file is left as it was (it used to be silently replaced by an optimiser checkpoint)."""
    from videomage_core.artifacts import save_artifact

    art = train_subject(model, _images(), _subject_settings(steps=2), cache_dir=tmp_path)
    artifact = save_artifact(art, tmp_path / "zib.safetensors")
    before = artifact.read_bytes()
    with pytest.raises(VideoMageInputError, match=r"^checkpoint: .*not a VideoMage training checkpoint"):
        train_subject(model, _images(), _subject_settings(steps=2), cache_dir=tmp_path, checkpoint_path=artifact)
    assert artifact.read_bytes() == before

    subject_ckpt = tmp_path / "subject.ckpt.safetensors"
    train_subject(model, _images(), _subject_settings(steps=2), cache_dir=tmp_path, checkpoint_path=subject_ckpt)
    before = subject_ckpt.read_bytes()
    settings = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=2,
                              inversion_steps=0, height=64, width=64)
    with pytest.raises(VideoMageInputError, match=r"^checkpoint: .*checkpoint of the 'subject' stage, not of 'motion'"):
        train_motion(model, _video(), settings, checkpoint_path=subject_ckpt)
    assert subject_ckpt.read_bytes() == before
    assert model.adapters == {}


def test_ctrl_c_keeps_the_finished_steps_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    def train(interrupt_at=None, ckpt=None):
        gen = torch.Generator().manual_seed(0)
        w = torch.nn.Parameter(torch.zeros(3))
        target = torch.randn(3, generator=torch.Generator().manual_seed(1))

        def step_fn(step):
            noise = torch.randn(3, generator=gen)  # the step draws from the loop's generator first
            if step == interrupt_at:
                raise KeyboardInterrupt
            loss = ((w - target - 0.1 * noise) ** 2).sum()
            return loss, {}

        result = run_training("toy", 6, [ParamGroup("w", [w], 0.1)], step_fn, gen, checkpoint_path=ckpt)
        return result, w.detach().clone()

    full, w_full = train()
    ckpt = tmp_path / "toy.ckpt.safetensors"
    with pytest.raises(TrainingCancelled, match="interrupted at step 4/6; resumable from"):
        train(interrupt_at=4, ckpt=ckpt)
    resumed, w_resumed = train(ckpt=ckpt)
    assert resumed.resumed_from == 4  # the four finished steps were kept, not the last periodic checkpoint
    assert resumed.losses == full.losses and torch.equal(w_resumed, w_full)


@pytest.mark.parametrize("trainer", ["videomage", "motiondirector"])
def test_a_motion_lora_of_every_temporal_linear_trains_and_an_unknown_coverage_is_refused(model, trainer):
    from videomage_core.lora import lora_targets
    from videomage_core.motiondirector import MotionDirectorSettings, train_motiondirector

    def run(coverage, steps=2):
        if trainer == "videomage":
            return train_motion(model, _video(), MotionSettings(
                motion_prompt="a toy moving right", reference_words=("toy",), steps=steps, inversion_steps=1,
                height=64, width=64, coverage=coverage))
        return train_motiondirector(model, _video(), MotionDirectorSettings(
            motion_prompt="a toy moving right", steps=steps, height=64, width=64, frames=4, coverage=coverage))

    art = run("all_linear")
    layers = {k.rsplit(".lora_", 1)[0] for k in art.lora}
    assert layers == {n for n, _ in model.unet.named_modules()
                      if re.fullmatch(lora_targets(model, "temporal", "all_linear"), n)}
    assert art.coverage == "all_linear" and art.train_args["coverage"] == "all_linear"
    assert any(float(v.abs().max()) > 0 for k, v in art.lora.items() if k.endswith("ff.net.2.lora_B.weight"))
    assert model.adapters == {}
    with pytest.raises(VideoMageInputError, match="^coverage: "):
        run("every_layer")
    assert model.adapters == {}
