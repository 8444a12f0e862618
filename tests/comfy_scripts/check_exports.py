"""Run by tests/test_comfyui_exports.py with ComfyUI's own Python, inside a ComfyUI checkout: ComfyUI's code
applies our exported files. Prints one JSON line.

argv: comfy_root repo lora_file expected_deltas_file embeddings_dir embedding_name expected_embedding_file
"""
import json
import sys

import torch

from comfy_setup import apply_lora, not_loaded, start

comfy_root, repo, lora_file, deltas_file, emb_dir, emb_name, emb_file = sys.argv[1:8]
lines = start(comfy_root, repo)
import comfy.lora  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.sd1_clip  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from videomage_core.bases.sd15_files import sd15_config, unet_to_ldm  # noqa: E402

# 1. SD1.5 at its real widths, built by ComfyUI itself on the meta device: recognised from the key layout
#    our single-file writer produces, so ComfyUI's key map is the one a real checkpoint gets.
with torch.device("meta"):
    unet = UNet2DConditionModel(**sd15_config()["unet"])
ldm = unet_to_ldm(unet.state_dict(), 4, 2)
config = comfy.model_detection.model_config_from_unet(ldm, "model.diffusion_model.")
with torch.device("meta"):
    model = config.get_model({})
key_map = comfy.lora.model_lora_keys_unet(model, {})

# 2. Load LoRA's own code on our exported file: every key used, each delta ComfyUI computes is ours.
applied = apply_lora(lora_file, deltas_file, key_map)  # kohya name -> our scaling * B @ A

# 3. CLIP Text Encode's tokenizer finds the embedding by name and uses our vector.
tok = comfy.sd1_clip.SD1Tokenizer(embedding_directory=emb_dir)
tokens = tok.tokenize_with_weights(f"a photo of embedding:{emb_name} toy")
vectors = [t for seq in tokens["l"] for t, *_ in seq if isinstance(t, torch.Tensor)]
want = torch.load(emb_file, weights_only=True)
print(json.dumps({
    "model_config": type(config).__name__, **applied, "not_loaded_lines": not_loaded(lines),
    "embedding_vectors": len(vectors),
    "embedding_equal": bool(vectors) and torch.equal(vectors[0].float().reshape(-1), want.float().reshape(-1)),
}))
