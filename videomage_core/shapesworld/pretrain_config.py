"""Pretraining configuration of the built-in ShapesWorld model: :class:`PretrainConfig` (everything that
defines a run, stored with its checkpoints so that a resume can check it), the named presets
(``full``, the GPU plan; ``cpu``, the first edition, whose weights are again the built-in model (the third
edition); ``cpu64`` and ``h200``, the second edition; ``cpu64f8``, a 64 px candidate; ``smoke``, for tests), the model-folder size limit and the stage names. Split out of
:mod:`.pretrain`, which re-exports every name here."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

MAX_MODEL_MB = 20.0
STAGES = ("vae", "t2v")
_STAGE_CODE = {"vae": 1, "t2v": 2, "vae_val": 11, "ceiling": 12}


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (stored with its checkpoints; a resume must match)."""

    height: int = 128
    width: int = 128
    frames: int = 8
    # VAE
    vae_channels: tuple = (32, 64, 64)
    vae_layers: int = 1
    vae_groups: int = 32
    latent_channels: int = 4
    vae_batch: int = 32
    vae_lr: float = 5e-4
    vae_steps: int = 3000
    vae_warmup: int = 100
    vae_psnr_target: float = 30.0  # dB over object pixels (dilated masks)
    vae_eval_every: int = 250
    vae_val_images: int = 64
    vae_object_weight: float = 4.0
    vae_kl: float = 1e-6
    vae_rehue: float = 0.5  # fraction of objects given a uniform hue
    vae_max_scale: float = 1.25  # objects up to this x the generator's size
    ceiling_per_cell: int = 3  # ground-truth clips per held-out cell for the VAE ceiling
    # UNet + text encoder
    unet_channels: tuple = (32, 64, 64, 64)
    unet_layers: int = 1
    unet_heads: int = 8
    unet_groups: int = 8
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 256
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 300
    min_lr_frac: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    steps: int = 20000
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    p_interaction: float = 0.4
    # share of all clips showing two still objects captioned "{A} and {B}" (p_interaction is then the
    # interactions' share of the rest); 0: the family is off and the data stream is the one before it existed
    p_still_pair: float = 0.0
    # evaluation
    eval_samples: int = 40
    eval_steps: int = 30
    eval_cfg: float = 3.0
    eval_batch: int = 40
    min_map: int = 8  # smallest allowed attention map at the recorded levels
    record_level: int = 2  # UNet level whose attention the engine records (0 = full latent size)
    seed: int = 0

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.vae_factor, self.width // self.vae_factor

    @property
    def attention_levels(self) -> tuple[str, str]:
        """The recorded blocks: ``down_blocks.k`` and its mirror ``up_blocks.(3 - k)``."""
        return (f"down_blocks.{self.record_level}", f"up_blocks.{3 - self.record_level}")

    @property
    def map_size(self) -> tuple[int, int]:
        """Attention-map size at the recorded level (ceil division by 2 ** level)."""
        f = 2**self.record_level
        return tuple(-(-s // f) for s in self.latent_size)

    def check(self) -> None:
        if self.height % 8 or self.width % 8:
            raise ValueError("height and width must be multiples of 8 (the engine's size checks)")
        if self.height % self.vae_factor or self.width % self.vae_factor:
            raise ValueError("height and width must be multiples of the VAE factor")
        if len(self.unet_channels) != 4:
            raise ValueError("the UNet keeps ZeroScope's four levels")
        if self.record_level not in (0, 1, 2):
            raise ValueError("record_level must be 0, 1 or 2 (the levels with attention)")
        if min(self.map_size) < self.min_map:
            raise ValueError(
                f"attention maps at the recorded levels would be {self.map_size}, "
                f"below {self.min_map}x{self.min_map}"
            )
        if self.warmup < 1 or self.vae_warmup < 1:
            raise ValueError("warm-up must be at least one step")

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        kw = {}
        for f in fields(cls):
            if f.name in d:
                kw[f.name] = tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name]
        return cls(**kw)


PRESETS = {
    "full": PretrainConfig(),
    # What a 2-core CPU can train in about an hour (the committed built-in model): 32 px frames, VAE
    # factor 4 -> 8x8 latent, attention recorded at the full-resolution level (down_blocks.0 /
    # up_blocks.3), so maps stay 8x8; the first ShapesWorld experiment's UNet (~0.9 s per 16-clip step).
    "cpu": PretrainConfig(
        height=32,
        width=32,
        vae_batch=32,
        vae_steps=1500,
        vae_warmup=50,
        vae_psnr_target=30.0,
        vae_eval_every=150,
        ceiling_per_cell=4,
        batch=16,
        warmup=150,
        ema_decay=0.995,
        record_level=0,
    ),
    # Second edition (issue 18): 64 px frames (the generator's native size), VAE factor 4 -> 16x16
    # latents, where objects are 3-4 latent pixels wide and every shape survives the VAE (ceiling
    # measured with the first edition's VAE: shape 0.96-1.00 at 64 px against 0.82 at 32 px); attention
    # recorded at level 1 (maps 8x8). Warm-started from the first edition (--init-from): its VAE is kept
    # and its UNet and text encoder continue on the new world. Measured on 2 cores: 1.25 s per 8-clip
    # UNet step in fp32, 1.91 s with bf16 autocast (this CPU's bf16 is slower for these small layers).
    "cpu64": PretrainConfig(
        height=64,
        width=64,
        vae_batch=32,
        vae_steps=1500,
        vae_warmup=50,
        vae_eval_every=150,
        ceiling_per_cell=4,
        batch=8,
        lr=5e-4,
        warmup=100,
        ema_decay=0.995,
        record_level=1,
    ),
    # One H200-class GPU in about 10 minutes (not run: no GPU was lent to the sessions so far): the same
    # world and model at batch 64, bf16 autocast (CUDA), data from 12 worker processes.
    "h200": PretrainConfig(
        height=64,
        width=64,
        vae_batch=64,
        vae_steps=1500,
        batch=64,
        lr=1e-3,
        warmup=200,
        steps=6000,
        ema_decay=0.999,
        record_level=1,
    ),
    # Tests: seconds on a CPU. 32 px, 4 frames, channels of 8-16; attention maps 2x2 (allowed here).
    "smoke": PretrainConfig(
        height=32,
        width=32,
        frames=4,
        vae_channels=(8, 16, 16),
        vae_groups=8,
        vae_batch=4,
        vae_steps=2,
        vae_warmup=1,
        vae_eval_every=2,
        vae_val_images=4,
        ceiling_per_cell=0,
        unet_channels=(16, 16, 16, 16),
        unet_heads=2,
        unet_groups=8,
        text_dim=16,
        text_layers=1,
        text_heads=2,
        text_ff=32,
        batch=2,
        steps=2,
        warmup=1,
        eval_samples=1,
        eval_steps=2,
        eval_batch=4,
        min_map=1,
    ),
}

# Third edition (issue 18): 64 px frames through a factor-8 VAE with 16 latent channels (Wan's
# width) -> 8x8x16 latents: as much latent as the second edition's 16x16x4, but the UNet's deepest
# level is 1x1 again (the second edition's 2x2 could not hold a motion in its temporal layers,
# bench/motion_capacity.md) and a UNet step costs about a quarter. Warm-started from the first
# edition's UNet and text encoder (--init-from; 8x8 latents too, conv_in / conv_out fresh); attention
# recorded at level 0 (maps 8x8). Measured after 51 k clips: its temporal layers still cannot hold the
# orbit (bench/motion_capacity.md, docs/shapesworld.md), and the folder is 20.1 MB: not committed.
# The second edition's preset except for the VAE, the latent width, the batch (16 clips), the learning rate
# and the recorded level.
PRESETS["cpu64f8"] = replace(
    PRESETS["cpu64"],
    vae_channels=(32, 64, 64, 64),
    latent_channels=16,
    batch=16,
    lr=1e-3,
    warmup=150,
    record_level=0,
)
