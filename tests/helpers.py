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
