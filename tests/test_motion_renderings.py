"""Beyond the paper: a motion LoRA trained on its reference and other renderings of the same motion
(``train_motion``'s ``renderings``), and ShapesWorld's renderings of a reference clip in other looks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from videomage_core.diffusion import encode_video
from videomage_core.errors import VideoMageInputError
from videomage_core.motion import MotionSettings, train_motion


def _video(seed: int, frames: int = 4, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, size // 8, size // 8, generator=gen), size=(size, size),
                                           mode="bilinear").permute(0, 2, 3, 1)[0]
    return torch.stack([torch.roll(base, shifts=4 * i, dims=1) for i in range(frames)])


SETTINGS = MotionSettings(motion_prompt="a toy moving right", reference_words=("toy",), steps=12,
                          inversion_steps=0, height=64, width=64, frames=4)


def test_each_lora_step_trains_on_the_reference_or_a_rendering(model, monkeypatch):
    """Every step's clean latents are one of the videos' (drawn, so all three appear in 12 steps at this
    seed); the noise prior keeps the reference's latents; without renderings only the reference is seen."""
    import videomage_core.motion as M

    video, looks = _video(0), [_video(1), _video(2)]
    latents = [encode_video(model, v) for v in [video, *looks]]  # deterministic: the same tensors train_motion makes
    seen = []
    real = M.add_noise
    monkeypatch.setattr(M, "add_noise", lambda m, x0, noise, t: seen.append(x0.clone()) or real(m, x0, noise, t))
    art = train_motion(model, video, SETTINGS, renderings=looks)
    which = [next(i for i, lat in enumerate(latents) if torch.equal(x0, lat)) for x0 in seen]
    assert len(which) == SETTINGS.steps and set(which) == {0, 1, 2}
    assert torch.equal(art.reference_latents, latents[0].float()) and art.train_args["renderings"] == 2
    seen.clear()
    plain = train_motion(model, video, SETTINGS)
    assert all(torch.equal(x0, latents[0]) for x0 in seen) and plain.train_args["renderings"] == 0


def test_the_noise_prior_can_invert_the_mean_of_all_looks(model):
    """``noise_prior_from="looks"``: the artifact's prior latents are the mean of the reference's and the
    renderings' latents (the same float32 tensors averaged the same way, so exactly equal)."""
    from dataclasses import replace

    video, looks = _video(0), [_video(1), _video(2)]
    latents = [encode_video(model, v).float() for v in [video, *looks]]
    art = train_motion(model, video, replace(SETTINGS, steps=1, noise_prior_from="looks"), renderings=looks)
    assert torch.equal(art.reference_latents, torch.stack(latents).mean(0))
    assert not torch.equal(art.reference_latents, latents[0])
    assert art.train_args["noise_prior_from"] == "looks"


@pytest.mark.parametrize("source, renderings, message", [
    ("looks", 0, "give renderings"),  # nothing to average the reference with
    ("mean", 1, "expected one of"),  # not a source
])
def test_a_prior_source_that_cannot_be_built_is_one_input_error(model, source, renderings, message):
    from dataclasses import replace

    with pytest.raises(VideoMageInputError, match=f"noise_prior_from.*{message}"):
        train_motion(model, _video(0), replace(SETTINGS, noise_prior_from=source),
                     renderings=[_video(1)] * renderings)


def test_a_rendering_of_another_shape_is_one_input_error(model):
    with pytest.raises(VideoMageInputError, match="renderings"):
        train_motion(model, _video(0), SETTINGS, renderings=[_video(1, frames=5)])


def test_shapesworld_renders_the_reference_paths_in_other_looks():
    """Same paths, sizes and background as the reference; other hues and shapes; the same seed, the same looks."""
    from videomage_core.shapesworld import customization as C

    ref = C.reference_clip(3, "orbit", (), frames=8, size=32)
    looks = C.other_looks(ref, 3, seed=5)
    assert len(looks) == 3 and C.other_looks(ref, 0, seed=5) == []
    for look in looks:
        assert look.frames.shape == ref.frames.shape and look.motion == ref.motion
        assert np.array_equal(look.spec.paths, ref.spec.paths) and look.spec.background == ref.spec.background
        assert [o.size for o in look.objects] == [o.size for o in ref.objects]
    assert any(o.hue != r.hue for look in looks for o, r in zip(look.objects, ref.objects))
    again = C.other_looks(ref, 3, seed=5)
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(looks, again))


def test_renderings_of_moving_objects_only_keep_a_still_objects_look():
    """``which="moving"``: orbit's still centre keeps its reference look in every rendering, the orbiter gets the
    very look "all" gives it; where every object moves (swap) both choices render the same clips."""
    from videomage_core.shapesworld import customization as C

    orbit = C.reference_clip(3, "orbit", (), frames=8, size=32)
    assert np.ptp(orbit.spec.paths[1], axis=0).max() == 0 and np.ptp(orbit.spec.paths[0], axis=0).max() > 1
    moving, every = C.other_looks(orbit, 4, seed=5, which="moving"), C.other_looks(orbit, 4, seed=5)
    for m, a in zip(moving, every):
        assert m.objects[1] == orbit.objects[1] and m.objects[0] == a.objects[0]
    assert any(a.objects[1] != orbit.objects[1] for a in every)
    swap = C.reference_clip(3, "swap", (), frames=8, size=32)
    assert all(np.array_equal(m.frames, a.frames) for m, a in zip(C.other_looks(swap, 3, seed=5, which="moving"),
                                                                  C.other_looks(swap, 3, seed=5)))
    with pytest.raises(VideoMageInputError, match=r"^motion_renderings_look: expected one of"):
        C.other_looks(orbit, 1, seed=5, which="still")
