"""Run by tests/test_comfyui_exports.py with ComfyUI's own Python, inside a ComfyUI checkout: ComfyUI's code
on our Wan files. Prints one JSON line.

1. Wan 2.1 T2V 1.3B at its real widths, built on the meta device by diffusers and written in the original key
   layout by our writer (``transformer_to_original``): ComfyUI's detection must call it Wan, and its LoRA key map
   must take every key of our exported LoRA (no "lora key not loaded"), each delta ComfyUI computes ours.
2. ComfyUI's own umT5 tokenizer (sentencepiece on the ``spiece_model`` bytes of our tiny umT5 file) must give
   the ids our sentencepiece-free reader gives.

argv: comfy_root repo lora_file expected_deltas_file umt5_file prompts_json expected_ids_json
"""
import json
import sys

import torch

from comfy_setup import apply_lora, not_loaded, start

comfy_root, repo, lora_file, deltas_file, umt5_file, prompts_json, ids_json = sys.argv[1:8]
lines = start(comfy_root, repo)
import comfy.lora  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.utils  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402

from videomage_core.bases.wan import REAL_TRANSFORMER  # noqa: E402
from videomage_core.bases.wan_files import transformer_to_original  # noqa: E402

with torch.device("meta"):
    dit = WanTransformer3DModel(**REAL_TRANSFORMER)
original = transformer_to_original(dit.state_dict())
config = comfy.model_detection.model_config_from_unet(original, "")
with torch.device("meta"):
    model = config.get_model({})
key_map = comfy.lora.model_lora_keys_unet(model, {})

applied = apply_lora(lora_file, deltas_file, key_map)  # "diffusion_model.<module>" -> our scaling * B @ A

from comfy.text_encoders.spiece_tokenizer import SPieceTokenizer  # noqa: E402

spiece = comfy.utils.load_torch_file(umt5_file, safe_load=True)["spiece_model"]
tok = SPieceTokenizer(spiece)
prompts = json.loads(prompts_json)
ids = [tok(p)["input_ids"] for p in prompts]
detected = config.unet_config
print(json.dumps({
    "model_config": type(config).__name__, "dim": detected.get("dim"), "num_heads": detected.get("num_heads"),
    "num_layers": detected.get("num_layers"), **applied, "not_loaded_lines": not_loaded(lines),
    "token_ids": ids, "expected_ids": json.loads(ids_json),
}))
