import pytest
import torch

from videomage_core.checkpointing import set_gradient_checkpointing
from videomage_core.diffusion import encode_prompts, predict_noise
from videomage_core.errors import VideoMageInputError
from videomage_core.lora import inject_lora, trainable_lora_parameters
from videomage_core.model import load_model
from videomage_core.tokens import add_token, word_positions

from helpers import randomize_lora_b


def test_tiny_model_loads_through_the_real_path(tiny_model_dir, model):
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_model_dir / sub).is_dir()
    assert type(model.unet).__name__ == "UNet3DConditionModel"
    assert model.vae_scale_factor == 8
    assert not any(p.requires_grad for p in model.unet.parameters())
    assert len(model.fingerprint) == 16 and model.fingerprint == load_model(tiny_model_dir).fingerprint
    bf16 = load_model(tiny_model_dir, dtype="bf16")
    assert bf16.unet.dtype == torch.bfloat16 and bf16.fingerprint == model.fingerprint
    assert "tiny_zeroscope" in repr(model)


def test_tiny_model_is_reproducible(tmp_path, tiny_model_dir):
    from videomage_core.tiny import build_tiny_model

    again = load_model(build_tiny_model(tmp_path / "again", seed=0))
    assert again.fingerprint == load_model(tiny_model_dir).fingerprint


def test_tokens_train_only_their_rows(model):
    add_token(model, "<toy>", init_word="toy")
    emb = model.text_encoder.get_input_embeddings()
    before = emb.weight.detach().clone()
    row = [p for p in model.text_encoder.parameters() if p.requires_grad]
    assert row == []
    from videomage_core.tokens import token_parameters

    params = token_parameters(model, ["<toy>"])
    encode_prompts(model, ["A <toy>"]).sum().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0
    assert torch.equal(emb.weight, before)
    assert [c for c in word_positions(model.tokenizer, "A <toy> rides a dog", ["<toy>", "dog"])] == [[2], [5]]


def test_gradient_checkpointing_gives_identical_gradients(model):
    inject_lora(model, "s", "spatial")
    randomize_lora_b(model, "s")
    params = trainable_lora_parameters(model, "s")
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    text = encode_prompts(model, ["a toy"])

    def grads():
        for p in params:
            p.grad = None
        predict_noise(model, x, torch.tensor(300), text).pow(2).mean().backward()
        return [p.grad.clone() for p in params]

    plain = grads()
    set_gradient_checkpointing(model.unet, True)
    checked = grads()
    set_gradient_checkpointing(model.unet, False)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checked))
    assert "_vm_forward" not in model.unet.down_blocks[0].resnets[0].__dict__


@pytest.mark.parametrize("device, message", [
    ("gpu7", "'gpu7' is not a device"),
    ("cuda:99", "CUDA"),
    ("cuda", "CUDA"),
])
def test_devices_this_machine_lacks_are_clear_errors(device, message):
    from videomage_core.model import check_device

    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    with pytest.raises(VideoMageInputError, match=r"^device: .*" + message):
        check_device(device)
    assert check_device("cpu") == torch.device("cpu")
