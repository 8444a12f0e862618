"""Small helpers shared by tests."""
import torch


def randomize_lora_b(model, name: str, std: float = 0.05, seed: int = 0) -> None:
    """Fresh adapters have B = 0 (a no-op); tests that need an effect randomise B."""
    from videomage_core.lora import lora_layers

    gen = torch.Generator().manual_seed(seed)
    for _, layer in lora_layers(model.unet):
        if name in layer.lora_B:
            w = layer.lora_B[name].weight
            w.data = torch.randn(w.shape, generator=gen) * std


def build_shapesworld_standin(folder):
    """A stand-in for the built-in ShapesWorld model: the pretraining's smoke preset (seconds on a CPU;
    its videomage.json says 4 frames of 32x32). Returns the folder."""
    from pathlib import Path

    from videomage_core.shapesworld import pretrain as P

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        P.pretrain(folder, P.PRESETS["smoke"], eval_samples=0, log=lambda s: None)
    return folder


def write_user_inputs(folder, python: str) -> list:
    """The files the bundled real-model workflows load from ComfyUI's input folder (what a user puts
    there): three cut-out PNGs per subject whose transparency is the subject (ShapesWorld drawings), and
    the reference clip as an MPEG-4 video, encoded by ``python`` (ComfyUI's, which has PyAV; ours does
    not need it). Returns the paths written."""
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from build_workflows import REAL_SUBJECTS, REFERENCE_VIDEO, photo_files

    from videomage_core.shapesworld import PALETTE, ObjectSpec, render_subject_images, sample_interaction

    folder = Path(folder)
    rng = np.random.default_rng(0)
    written = []
    for (token, _), (shape, colour) in zip(REAL_SUBJECTS, (("star", "red"), ("ring", "green"))):
        obj = ObjectSpec(shape=shape, hue=PALETTE[colour], texture="stripes", size=0.3)
        drawn = render_subject_images(obj, 3, rng, height=64, width=96)
        for name, image, mask in zip(photo_files(token), drawn.images, drawn.masks):
            rgba = np.concatenate([image, mask[..., None]], -1)
            Image.fromarray((np.clip(rgba, 0, 1) * 255).round().astype(np.uint8), "RGBA").save(folder / name)
            written.append(folder / name)
    a = ObjectSpec(shape="circle", hue=PALETTE["blue"], texture="plain", size=7.5 / 64)
    b = ObjectSpec(shape="square", hue=PALETTE["yellow"], texture="plain", size=7.5 / 64)
    clip = sample_interaction(rng, "chase", (a, b), frames=8, height=64, width=64)
    frames = folder / "reference_frames.npy"
    np.save(frames, (np.clip(clip.frames, 0, 1) * 255).round().astype(np.uint8))
    encode = (
        "import av, numpy as np, sys\n"
        "frames = np.load(sys.argv[1])\n"
        "with av.open(sys.argv[2], 'w') as out:\n"
        "    s = out.add_stream('mpeg4', rate=8)\n"
        "    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'\n"
        "    for f in frames:\n"
        "        out.mux(s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')))\n"
        "    out.mux(s.encode())\n"
    )
    subprocess.run([python, "-c", encode, str(frames), str(folder / REFERENCE_VIDEO)], check=True, timeout=120)
    frames.unlink()
    written.append(folder / REFERENCE_VIDEO)
    return written


def build_sd15_width_single_files(folder) -> dict:
    """Random single files that ComfyUI itself recognises as SD1.5 (``model_channels`` 320, ``context_dim``
    768, the real SD VAE and CLIP ViT-L text encoder), with one resnet per level and 320 channels at every
    level to stay small, plus a matching motion module: so ComfyUI's own Load Checkpoint / Load LoRA /
    CLIP Text Encode can run on what the pack trains and exports. fp16 files (about 0.5 GB)."""
    import tempfile

    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from videomage_core.bases.animatediff import scheduler
    from videomage_core.bases.animatediff_files import save_single_files
    from videomage_core.bases.sd15_files import sd15_config
    from videomage_core.tiny import build_tiny_tokenizer

    ref = sd15_config()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**ref["unet"], "block_out_channels": (320,) * 4, "layers_per_block": 1})
    adapter = MotionAdapter(block_out_channels=(320,) * 4, motion_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True)
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in ref["text_encoder"].items() if k != "head_dim"}))
    vae = AutoencoderKL(**ref["vae"])
    components = {"unet": unet.half(), "motion_adapter": adapter.half(), "vae": vae.half(), "text_encoder": text.half(),
                  "scheduler": scheduler()}
    with tempfile.TemporaryDirectory() as tok:
        build_tiny_tokenizer(tok)
        return save_single_files(folder, components, tok)
