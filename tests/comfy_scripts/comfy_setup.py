"""What the comfy_scripts share (run with ComfyUI's own Python): ComfyUI's start-up on the CPU with its log
captured, and ComfyUI's own LoRA code applied to an exported file against the deltas we trained."""
import logging
import sys


def start(comfy_root: str, repo: str) -> list[str]:
    """Import ComfyUI from ``comfy_root`` (CPU) and the engine from ``repo``; returns the list ComfyUI's log
    messages are appended to."""
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfy_root)
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.path.insert(0, repo)
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logging.getLogger().addHandler(Capture())
    logging.getLogger().setLevel(logging.INFO)
    return lines


def apply_lora(lora_file: str, deltas_file: str, key_map: dict) -> dict:
    """Load LoRA's own code (``comfy.lora.load_lora`` with the model's key map) on our file: how many weights it
    patches, which of our modules it misses, and the worst relative error of the delta it computes at strength
    1 against ours (``deltas_file``: {LoRA key stem: delta})."""
    import torch

    import comfy.lora
    import comfy.utils

    lora = comfy.utils.load_torch_file(lora_file, safe_load=True)
    patches = comfy.lora.load_lora(lora, key_map)
    expected = torch.load(deltas_file, weights_only=True)
    worst, missing = 0.0, []
    for stem, delta in expected.items():
        weight_key = key_map.get(stem)
        if weight_key not in patches:
            missing.append(stem)
            continue
        got = comfy.lora.calculate_weight([(1.0, patches[weight_key], 1.0, None, None)], torch.zeros(delta.shape),
                                          weight_key)
        worst = max(worst, float((got - delta).abs().max() / delta.abs().max()))
    return {"patched": len(patches), "expected": len(expected), "missing": missing[:5],
            "worst_relative_delta_error": worst}


def not_loaded(lines: list[str]) -> list[str]:
    return [m for m in lines if "lora key not loaded" in m or "NOT LOADED" in m][:5]
