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
