"""The cases ``bench/run.py`` compares, on one loaded model with a subject and a motion adapter."""
from __future__ import annotations

import torch

from videomage_core.attention import AttentionRecorder
from videomage_core.diffusion import (add_noise, encode_prompts, encode_video, predict_noise, randn,
                                      sample_timesteps)
from videomage_core.lora import adapters_active, delete_lora, inject_lora, lora_layers, trainable_lora_parameters
from videomage_core.losses import regularization_loss, subject_loss
from videomage_core.model import load_model
from videomage_core.motion import MotionSettings, train_motion
from videomage_core.sampling import SampleSettings, SCSSettings, ddim_sample, initial_noise, scs_sample
from videomage_core.subject import SubjectSettings, prior_videos, train_subject
from videomage_core.tokens import add_token
from videomage_core.training import ParamGroup, run_training

SUPER = {"<toy>": "toy", "<dog>": "dog"}
PROMPT = "A <toy> rides a <dog>"


class Setup:
    sampling_steps = 50
    tau = 15
    train_steps = 10

    def __init__(self, model_dir, device, size: int, frames: int, capture_size: int = 256):
        self.model = load_model(model_dir, device=device)
        self.size, self.frames = size, frames
        m = self.model
        gen = torch.Generator().manual_seed(0)
        for tok, word in SUPER.items():
            add_token(m, tok, init_word=word)
        for name, scope in (("sub", "spatial"), ("mot", "temporal")):
            inject_lora(m, name, scope)
            for _, layer in lora_layers(m.unet):
                if name in layer.lora_B:
                    w = layer.lora_B[name].weight
                    w.data = (torch.randn(w.shape, generator=gen) * 0.02).to(w)
        self.settings = SampleSettings(frames=frames, height=size, width=size, steps=self.sampling_steps, cfg=9.0)
        self.latents = initial_noise(m, self.settings)
        # the forward comparison at ShapesWorld's size (8x8 maps at the recorded level), where the
        # per-op overhead of a tiny model's 2x2 or 4x4 maps does not dominate
        self.capture_size = capture_size
        self.x = torch.randn(1, 4, frames, capture_size // 8, capture_size // 8, generator=gen).to(device)
        self.text = encode_prompts(m, ["a toy rides a dog"])
        self.images = torch.rand(4, size, size, 3, generator=gen)
        self.video = torch.rand(frames, size, size, 3, generator=gen)
        self.cache = None

    def describe(self) -> str:
        n = sum(p.numel() for p in self.model.unet.parameters())
        unet = type(self.model.unet).__name__
        return f"tiny {self.model.family.TITLE} layout, {unet} ({n / 1e6:.1f} M parameters), {self.model.device}"

    # forward with / without the attention recorder
    @torch.no_grad()
    def forward_plain(self):
        predict_noise(self.model, self.x, torch.tensor(500), self.text)

    @torch.no_grad()
    def forward_capture(self):
        rec = AttentionRecorder(self.model.unet)
        with rec, rec.recording(self.x.shape):
            predict_noise(self.model, self.x, torch.tensor(500), self.text)

    # samplers
    def sample_plain_base(self):
        ddim_sample(self.model, "a toy rides a dog", self.settings, adapters=[], latents=self.latents)

    def sample_diffusers(self, pipe):
        with adapters_active(self.model, []):
            pipe("a toy rides a dog", num_frames=self.frames, height=self.size, width=self.size,
                 num_inference_steps=self.sampling_steps, guidance_scale=9.0, latents=self.latents.clone(),
                 output_type="latent")

    def sample_scs(self):
        scs_sample(self.model, PROMPT, SUPER, "sub", "mot", self.settings, SCSSettings(tau=self.tau),
                   latents=self.latents)

    def sample_wo_scs(self):
        ddim_sample(self.model, PROMPT, self.settings, adapters=["sub", "mot"], latents=self.latents)

    # training steps (each returns the seconds its training loop reports, setup excluded)
    def _subject_settings(self):
        return SubjectSettings(token="<cat>", superclass="cat", steps=self.train_steps, height=self.size,
                               width=self.size, prior_videos=2, prior_frames=self.frames, prior_steps=2)

    def subject_steps(self) -> float:
        import tempfile

        if self.cache is None:
            self.cache = tempfile.mkdtemp()
        art = train_subject(self.model, self.images, self._subject_settings(), cache_dir=self.cache)
        return float(art.train_args["seconds"])

    def plain_parts_steps(self) -> float:
        """A plain LoRA step on the image batch plus one on the regularization batch (no token)."""
        m, st = self.model, self._subject_settings()
        aux = prior_videos(m, "cat", 2, self.frames, self.size, self.size, 2, 9.0, 0, self.cache)
        x_img = torch.cat([encode_video(m, self.images[i:i + 1]) for i in range(len(self.images))])
        text_img = encode_prompts(m, ["A cat"] * len(self.images))
        aux_text = encode_prompts(m, [c for _, c in aux])
        inject_lora(m, "plain", "spatial", st.rank)
        gen = torch.Generator().manual_seed(0)
        try:
            with adapters_active(m, ["plain"]):
                def step(i):
                    noise = randn(x_img.shape, gen, m)
                    t = sample_timesteps(m, x_img.shape[0], gen)
                    loss = subject_loss(predict_noise(m, add_noise(m, x_img, noise, t), t, text_img), noise)
                    loss.backward()
                    j = int(torch.randint(0, len(aux), (1,), generator=gen))
                    noise_r = randn(aux[j][0].shape, gen, m)
                    t_r = sample_timesteps(m, 1, gen)
                    reg = regularization_loss(predict_noise(m, add_noise(m, aux[j][0], noise_r, t_r), t_r,
                                                            aux_text[j:j + 1]), noise_r)
                    reg.backward()
                    return (loss + reg).detach(), {}

                res = run_training("plain", st.steps, [ParamGroup("lora", trainable_lora_parameters(m, "plain"),
                                                                  st.lr_lora, 1e-2)], step, gen)
        finally:
            delete_lora(m, "plain")
        return float(res.seconds)

    def _motion(self, omega: float) -> float:
        st = MotionSettings(motion_prompt="a toy moving", reference_words=("toy",), omega=omega,
                            steps=self.train_steps, inversion_steps=0, height=self.size, width=self.size)
        return float(train_motion(self.model, self.video, st).train_args["seconds"])

    def motion_steps(self) -> float:
        return self._motion(0.5)

    def plain_motion_steps(self) -> float:
        return self._motion(0.0)
