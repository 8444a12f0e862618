"""Attention-map recorder: spatial cross-attention (SCA) and temporal self-attention (TSA) maps.

Only the recorded layers run an explicit ``softmax(q k^T * scale) @ v`` (autograd kept); every other
layer keeps PyTorch's SDPA. Maps are averaged over heads as they are stored, and over layers when
read. Which layers are spatial cross-attention and temporal self-attention, and the default level, is
the base family's (:mod:`videomage_core.bases`); ``method.md`` section 4 decides the level.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F


class StopForward(Exception):
    """Raised after the last recorded layer when only the maps are needed (saves the rest of the UNet)."""


def recorded_layer_names(unet, levels=None) -> tuple[list[str], list[str]]:
    """(spatial cross-attention layers, temporal self-attention layers) inside ``levels`` (default:
    the base family's ``DEFAULT_LEVELS``)."""
    from .bases import default_levels, family_of

    return family_of(unet).attention_layer_names(unet, tuple(levels or default_levels(unet)))


class _RecordingProcessor:
    def __init__(self, recorder: "AttentionRecorder", name: str, kind: str):
        self.recorder, self.name, self.kind = recorder, name, kind

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        residual = hidden_states
        batch, seq, _ = hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        heads = attn.heads
        q = attn.to_q(hidden_states)
        k, v = attn.to_k(context), attn.to_v(context)
        head_dim = q.shape[-1] // heads
        q, k, v = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        acc = torch.promote_types(q.dtype, torch.float32)  # fp16/bf16 -> fp32 maps; fp64 stays
        scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            scores = scores + mask.view(batch, heads, -1, mask.shape[-1]).to(acc)
        probs = scores.softmax(dim=-1)
        self.recorder._store(self.name, self.kind, probs.mean(1))
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(batch, -1, heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        self.recorder._after(self.name)
        return out


class _Gate:
    """A recorded layer's processor: the recording one when the current recording wants its kind of map,
    else the layer's own (no explicit attention). The choice persists after the recording, so a gradient
    checkpoint's recomputation in the backward runs the same code as the forward did."""

    def __init__(self, recorder: "AttentionRecorder", name: str, kind: str, recording):
        self.recorder, self.name, self.kind, self.recording = recorder, name, kind, recording

    def __call__(self, attn, *args, **kwargs):
        if self.recorder.wants(self.kind):
            return self.recording(attn, *args, **kwargs)
        out = self.recorder._saved[self.name](attn, *args, **kwargs)
        self.recorder._after(self.name)
        return out


class AttentionRecorder:
    """Records SCA and TSA maps of the chosen layers during a UNet forward.

    Use ``with recorder.recording(latents.shape):`` around a forward. Then
    :meth:`spatial_maps` gives ``(B, F, 77, h, w)`` and :meth:`temporal_maps` gives
    ``(B, h*w, F, F)``, each averaged over heads and layers. With ``stop_after_last`` the
    forward is cut short after the last recorded layer (:class:`StopForward` is caught).
    """

    def __init__(self, unet, levels=None, spatial: bool = True, temporal: bool = True):
        from .bases import default_levels, family_of

        self.unet = unet
        levels = tuple(levels or default_levels(unet))
        s_names, t_names = recorded_layer_names(unet, levels)
        self.layers = {n: "spatial" for n in (s_names if spatial else [])}
        self.layers.update({n: "temporal" for n in (t_names if temporal else [])})
        if not self.layers:
            raise ValueError(f"attention_levels: no attention layers found in {list(levels)}")
        self.levels = tuple(levels)
        self.maps: dict[str, torch.Tensor] = {}
        self._armed = False
        self._stop = False
        self._calls = 0
        self._batch, self._frames, self._latent_hw = 1, 1, (1, 1)
        self._saved = {}
        modules = dict(unet.named_modules())  # once: named_modules over a full UNet is slow
        self._modules = {name: modules[name] for name in self.layers}
        processor = getattr(family_of(unet), "RecordingProcessor", _RecordingProcessor)
        self._processors = {name: _Gate(self, name, kind, processor(self, name, kind))
                            for name, kind in self.layers.items()}
        self._kinds = None  # the kinds of map the current recording computes (None: all)

    def attach(self) -> None:
        for name, module in self._modules.items():
            self._saved[name] = module.processor
            module.processor = self._processors[name]

    def detach(self) -> None:
        for name, proc in self._saved.items():
            self._modules[name].processor = proc
        self._saved = {}

    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        self.detach()

    def wants(self, kind: str) -> bool:
        return self._kinds is None or kind in self._kinds

    @contextlib.contextmanager
    def recording(self, latent_shape, stop_after_last: bool = False, kinds=None):
        """Record the maps of one forward of latents shaped ``(B, C, F, H, W)``; with ``kinds``
        (``("spatial",)`` or ``("temporal",)``) only those maps, the other recorded layers running their
        own processor, and ``stop_after_last`` stops after the last layer whose map is recorded.

        Recomputations during a later backward (gradient checkpointing) are ignored.
        """
        self._kinds = None if kinds is None else frozenset(kinds)
        self._wanted = sum(self.wants(kind) for kind in self.layers.values())
        self.maps, self._calls, self._armed = {}, 0, True
        self._batch, _, self._frames, h, w = latent_shape
        self._latent_hw, self._stop = (h, w), stop_after_last
        try:
            yield self
        except StopForward:
            pass
        finally:
            self._armed = False

    def _store(self, name: str, kind: str, probs: torch.Tensor) -> None:
        if self._armed:
            self.maps[name] = probs

    def _after(self, name: str) -> None:
        if not self._armed or not self.wants(self.layers[name]):
            return
        self._calls += 1
        if self._stop and self._calls == self._wanted:
            self._armed = False
            raise StopForward()

    def _hw(self, tokens: int) -> tuple[int, int]:
        h, w = self._latent_hw
        for s in (1, 2, 4, 8, 16, 32):
            hh, ww = math.ceil(h / s), math.ceil(w / s)
            if hh * ww == tokens:
                return hh, ww
        raise RuntimeError(f"cannot place {tokens} attention rows on a {h}x{w} latent")

    def spatial_maps(self) -> torch.Tensor:
        """SCA probabilities ``(B, F, T, h, w)`` (T text tokens), mean over heads and layers."""
        maps = []
        for name, kind in self.layers.items():
            if kind != "spatial" or name not in self.maps:
                continue
            p = self.maps[name]  # (B*F, h*w, T)
            h, w = self._hw(p.shape[1])
            bf, _, t = p.shape
            maps.append(p.transpose(1, 2).reshape(bf, t, h, w))
        if not maps:
            raise RuntimeError("no spatial cross-attention map was recorded")
        size = maps[0].shape[-2:]
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in maps]
        mean = torch.stack(maps).mean(0)
        return mean.reshape(-1, self._frames, *mean.shape[1:])

    def temporal_maps(self) -> torch.Tensor:
        """TSA probabilities ``(B, h*w, F, F)``, mean over heads and layers."""
        maps, size = [], None
        for name, kind in self.layers.items():
            if kind != "temporal" or name not in self.maps:
                continue
            p = self.maps[name]  # (B*h*w, F, F)
            f = p.shape[-1]
            h, w = self._hw(p.shape[0] // self._batch)
            grid = p.reshape(self._batch, h, w, f * f).permute(0, 3, 1, 2)
            if size is None:
                size = (h, w)
            elif (h, w) != size:
                grid = F.interpolate(grid, size=size, mode="bilinear")
            maps.append(grid)
        if not maps:
            raise RuntimeError("no temporal self-attention map was recorded")
        mean = torch.stack(maps).mean(0)  # (B, F*F, h, w)
        b, ff, h, w = mean.shape
        f = int(round(math.sqrt(ff)))
        return mean.permute(0, 2, 3, 1).reshape(b, h * w, f, f)
