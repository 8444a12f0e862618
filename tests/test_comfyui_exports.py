"""The exports proven with a real ComfyUI's own code (run with its Python, see comfy_scripts/check_exports.py):
core Load LoRA's key map and delta on our SD1.5 LoRA (ComfyUI builds SD1.5 at its real widths, on the meta
device, from the key layout our single-file writer produces), and CLIP Text Encode's tokenizer on our
embedding. Skipped without a ComfyUI checkout (test_comfyui_server.py says where it looks)."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from test_comfyui_server import COMFY_ROOT, REPO, comfy_python  # noqa: F401
from test_exports import _artifact  # a trained-looking AnimateDiff subject
from videomage_core.artifacts import LoraArtifact
from videomage_core.bases.animatediff_export import kohya_name
from videomage_core.export import export_artifact
from videomage_core.lora import lora_delta

pytestmark = pytest.mark.skipif(COMFY_ROOT is None, reason="needs a ComfyUI checkout (COMFYUI_DIR)")


def test_comfyui_loads_our_lora_and_embedding_exactly(animatediff_model_dir, tmp_path):
    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)
    art = _artifact(model, "subject", rank=4, alpha=2.0)
    folder = lambda kind: tmp_path / "models" / kind  # noqa: E731
    lora_file = export_artifact(art, "toy", folder)[0]
    modules = sorted({k[: -len(".lora_A.weight")] for k in art.lora if k.endswith(".lora_A.weight")})
    deltas = {kohya_name(m): lora_delta(art.lora, m, art.scaling) for m in modules}
    torch.save(deltas, tmp_path / "deltas.pt")
    # an embedding of SD1.5's width (ComfyUI ignores others): a subject whose token row is 768 wide
    row = torch.randn(768, generator=torch.Generator().manual_seed(0))
    emb_art = LoraArtifact(kind="subject", scope="spatial", rank=4, alpha=4.0, lora={}, tokens={"<my_toy>": row},
                           superclasses={}, base_fingerprint="f", base="animatediff")
    export_artifact(emb_art, "emb", lambda kind: tmp_path / "sd15" / kind)  # beside the 64-wide tiny one
    torch.save(row, tmp_path / "row.pt")
    script = REPO / "tests" / "comfy_scripts" / "check_exports.py"
    done = subprocess.run([comfy_python(COMFY_ROOT), str(script), str(COMFY_ROOT), str(REPO), str(lora_file),
                           str(tmp_path / "deltas.pt"), str(tmp_path / "sd15" / "embeddings"), "my_toy",
                           str(tmp_path / "row.pt")], capture_output=True, text=True, timeout=300, cwd=COMFY_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    version = (COMFY_ROOT / "comfyui_version.py").read_text().split('"')[1] if (COMFY_ROOT / "comfyui_version.py").is_file() else "?"
    print(f"against ComfyUI {version} at {COMFY_ROOT}: {result}")
    assert result["model_config"] == "SD15", "ComfyUI recognises SD1.5 from the key layout"
    assert result["patched"] == result["expected"] == len(modules) and not result["missing"]
    assert result["not_loaded_lines"] == [], "ComfyUI used every key of the LoRA"
    # ComfyUI computes strength * alpha / rank * up @ down in float32: one rounding from ours per element
    assert result["worst_relative_delta_error"] <= 2**-20
    assert result["embedding_vectors"] == 1 and result["embedding_equal"]


def test_comfyui_maps_every_key_of_our_wan_lora_and_reads_our_umt5_tokenizer(wan_model_dir, wan_files, tmp_path):
    """ComfyUI's detection calls a real-width Wan 2.1 1.3B in our original key layout Wan (dim 1536, 12 heads,
    30 blocks), its LoRA key map takes every key of our exported subject and motion LoRAs with the delta we
    trained, and its sentencepiece tokenizer on our tiny umT5 file's spiece_model gives our reader's ids."""
    from test_wan_files import _artifact as wan_artifact
    from videomage_core.bases.wan_export import wan_module_name
    from videomage_core.model import load_model

    model = load_model(wan_model_dir)
    for kind in ("subject", "motion"):
        art = wan_artifact(model, kind)
        lora_file = export_artifact(art, f"wan_{kind}", lambda k: tmp_path / kind / k)[0]
        modules = sorted({k[: -len(".lora_A.weight")] for k in art.lora if k.endswith(".lora_A.weight")})
        deltas = {"diffusion_model." + wan_module_name(m): lora_delta(art.lora, m, art.scaling) for m in modules}
        torch.save(deltas, tmp_path / f"{kind}_deltas.pt")
        prompts = ["a toy rides a dog", "A dog  chases a ball!", "xq 3"]
        ids = [model.tokenizer(p).input_ids for p in prompts]
        script = REPO / "tests" / "comfy_scripts" / "check_wan_exports.py"
        done = subprocess.run([comfy_python(COMFY_ROOT), str(script), str(COMFY_ROOT), str(REPO), str(lora_file),
                               str(tmp_path / f"{kind}_deltas.pt"), str(wan_files["text_encoder"]), json.dumps(prompts),
                               json.dumps(ids)], capture_output=True, text=True, timeout=300, cwd=COMFY_ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{kind}: {result}")
        assert result["model_config"].startswith("WAN21") and (result["dim"], result["num_heads"],
                                                               result["num_layers"]) == (1536, 12, 30)
        assert result["patched"] == result["expected"] == len(modules) and not result["missing"]
        assert result["not_loaded_lines"] == [], "ComfyUI used every key of the LoRA"
        assert result["worst_relative_delta_error"] <= 2**-20  # ComfyUI's alpha / rank * B @ A in fp32
        assert result["token_ids"] == result["expected_ids"]
