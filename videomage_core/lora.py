"""LoRA on a base model's spatial or temporal attention layers, several named adapters at once.

Subject LoRAs live on spatial layers, motion LoRAs on temporal layers (``method.md`` sections 1-2);
which projections those are is the base family's (``LORA_TARGETS`` in :mod:`videomage_core.bases`).
:func:`average_of_deltas` is the exact fusion initialisation of section 3.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from .errors import require

SCOPES = ("spatial", "temporal")


def coverages(family, scope: str) -> list[str]:
    """The coverages a ``scope`` LoRA can have on a base ``family`` (module of :mod:`.bases`)."""
    return ["attention", *getattr(family, "LORA_COVERAGES", {}).get(scope, {})]


def family_targets(family, scope: str, coverage: str = "attention") -> str:
    """The regex of the layers a ``scope`` LoRA of ``coverage`` trains on a base ``family``."""
    require(scope in SCOPES, "scope", f"expected one of {list(SCOPES)}, got '{scope}'")
    if coverage == "attention":
        return family.LORA_TARGETS[scope]
    extra = getattr(family, "LORA_COVERAGES", {}).get(scope, {})
    require(coverage in extra, "coverage", f"expected one of {coverages(family, scope)} for a {scope} "
            f"LoRA on {family.NAME}, got '{coverage}'")
    return extra[coverage]


def lora_targets(model_or_unet, scope: str, coverage: str = "attention") -> str:
    """The regex of the layers a ``scope`` LoRA of ``coverage`` trains on this model's base family."""
    from .bases import family_of

    return family_targets(family_of(model_or_unet), scope, coverage)


def lora_layers(unet: torch.nn.Module):
    """(name, layer) of every peft LoRA layer in ``unet``."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)]


def inject_lora(model, name: str, scope: str, rank: int = 4, alpha: float | None = None,
                seed: int = 0, targets: str | None = None, coverage: str = "attention") -> None:
    """Add adapter ``name`` on the ``scope`` ('spatial' or 'temporal') layers of ``coverage``
    (:data:`videomage_core.bases.COVERAGES`); B = 0, so a no-op.

    ``targets``: a regex of module names replacing the family's ``scope`` targets (probes only, e.g.
    ``bench/motion_capacity.py``; artifacts of the engine always use the family's).

    A is drawn as peft does (Kaiming-uniform, bound 1/sqrt(fan_in)) but from ``seed``, so the same
    seed gives the same adapter whatever ran before.

    Afterwards exactly the previously active adapters plus ``name`` are active, and nothing
    requires grad (call :func:`trainable_lora_parameters` to train it).
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(model, scope, coverage) if targets is None else targets
    require(isinstance(rank, int) and rank >= 1, "rank", f"expected an integer >= 1, got {rank!r}")
    if name in model.adapters:
        delete_lora(model, name)
    active = active_adapters(model)
    alpha = float(rank if alpha is None else alpha)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                        init_lora_weights=True)
    with warnings.catch_warnings():  # "Already found a `peft_config`": several adapters are intended
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, model.unet, adapter_name=name)
    gen = torch.Generator().manual_seed(int(seed))
    for _, layer in lora_layers(model.unet):  # adapters train in fp32 even on a fp16/bf16 base
        if name in layer.lora_A:
            a = layer.lora_A[name]
            bound = 1.0 / a.weight.shape[1] ** 0.5
            init = (torch.rand(a.weight.shape, generator=gen) * 2 - 1) * bound
            a.weight.data = init.to(model.device, torch.float32)
            layer.lora_B[name].to(model.device, torch.float32)
    model.adapters[name] = {"scope": scope, "rank": rank, "alpha": alpha, "coverage": coverage}
    model._lora_layer_cache = None
    freeze_lora(model, name)
    set_active_adapters(model, active + [name])


def active_adapters(model) -> list[str]:
    return list(getattr(model, "_active_adapters", []))


def _layers(model):
    """The model's LoRA layers, cached (named_modules over a 1.4 B UNet is slow): reset on inject/delete."""
    if getattr(model, "_lora_layer_cache", None) is None:
        model._lora_layer_cache = [layer for _, layer in lora_layers(model.unet)]
    return model._lora_layer_cache


def set_active_adapters(model, names: list[str]) -> None:
    """Activate exactly ``names`` (others off). Which LoRA weights require grad is left unchanged.

    Sets peft's per-layer active list directly: ``set_adapter`` would also flip requires_grad,
    and this runs several times per sampling step.
    """
    unknown = [n for n in names if n not in model.adapters]
    require(not unknown, "adapters", f"unknown adapters {unknown}; loaded: {sorted(model.adapters)}")
    for layer in _layers(model):
        layer._active_adapter = list(names)
        layer._disable_adapters = False
    model._active_adapters = list(names)


def freeze_lora(model, name: str) -> None:
    for _, layer in lora_layers(model.unet):
        if name in layer.lora_A:
            layer.lora_A[name].requires_grad_(False)
            layer.lora_B[name].requires_grad_(False)


@contextlib.contextmanager
def adapters_active(model, names: list[str]):
    """Temporarily activate exactly ``names`` ([] = the frozen base model)."""
    before = active_adapters(model)
    set_active_adapters(model, names)
    try:
        yield
    finally:
        set_active_adapters(model, before)


@contextlib.contextmanager
def adapter_scales(model, scales: dict[str, float]):
    """Temporarily multiply adapters' LoRA deltas: adapter ``name`` adds ``scales[name]`` times its delta.

    Scales peft's per-layer ``scaling[name]`` (``alpha / rank``) of every layer holding the adapter,
    whatever is active (activation, :func:`adapters_active`, is independent); 0 makes the adapter add
    exactly nothing. Factors of 1.0 are skipped, so they leave every value and result bit-identical.
    The exact previous values come back on exit, also after an error; nested uses compose.
    """
    changes = {name: float(s) for name, s in scales.items() if float(s) != 1.0}
    unknown = [n for n in changes if n not in model.adapters]
    require(not unknown, "adapters", f"unknown adapters {unknown}; loaded: {sorted(model.adapters)}")
    saved = []
    try:
        if changes:
            for layer in _layers(model):
                for name, factor in changes.items():
                    if name in layer.scaling:
                        saved.append((layer, name, layer.scaling[name]))
                        layer.scaling[name] = layer.scaling[name] * factor
        yield
    finally:
        for layer, name, value in reversed(saved):
            layer.scaling[name] = value


def trainable_lora_parameters(model, name: str) -> list[torch.nn.Parameter]:
    """The parameters of adapter ``name`` with requires_grad on (all other LoRA weights frozen)."""
    params = []
    for _, layer in lora_layers(model.unet):
        if name in layer.lora_A:
            for p in (layer.lora_A[name].weight, layer.lora_B[name].weight):
                p.requires_grad_(True)
                params.append(p)
    return params


def delete_lora(model, name: str) -> None:
    for _, layer in lora_layers(model.unet):
        if name in layer.lora_A:
            layer.delete_adapter(name)
    model.adapters.pop(name, None)
    model._lora_layer_cache = None
    set_active_adapters(model, [n for n in active_adapters(model) if n != name])


def lora_state_dict(model, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name`` with peft/diffusers key names (``<module>.lora_A.weight`` / ``lora_B``)."""
    state = {}
    for path, layer in lora_layers(model.unet):
        if name in layer.lora_A:
            state[f"{path}.lora_A.weight"] = layer.lora_A[name].weight.detach().clone()
            state[f"{path}.lora_B.weight"] = layer.lora_B[name].weight.detach().clone()
    return state


def load_lora_state(model, name: str, state: dict[str, torch.Tensor], scope: str, rank: int,
                    alpha: float, coverage: str = "attention") -> None:
    """Inject adapter ``name`` and fill it from ``state`` (keys as :func:`lora_state_dict` writes)."""
    inject_lora(model, name, scope, rank=rank, alpha=alpha, coverage=coverage)
    layers = dict(lora_layers(model.unet))
    expected = set()
    for path, layer in layers.items():
        if name in layer.lora_A:
            expected |= {f"{path}.lora_A.weight", f"{path}.lora_B.weight"}
    missing, extra = expected - set(state), set(state) - expected
    require(not missing and not extra, "lora", f"the LoRA does not fit this model's {scope} layers ({coverage}): "
            f"{len(missing)} missing keys (e.g. {sorted(missing)[:2]}), {len(extra)} unexpected")
    with torch.no_grad():
        for key, value in state.items():
            path, ab = key.rsplit(".lora_", 1)
            target = (layers[path].lora_A if ab.startswith("A") else layers[path].lora_B)[name].weight
            require(target.shape == value.shape, "lora", f"{key}: shape {tuple(value.shape)} does not "
                    f"match the model's {tuple(target.shape)}")
            target.copy_(value.to(target))


def lora_delta(state: dict[str, torch.Tensor], module: str, scaling: float) -> torch.Tensor:
    """The weight delta ``scaling * B @ A`` of one module."""
    a, b = state[f"{module}.lora_A.weight"].float(), state[f"{module}.lora_B.weight"].float()
    return scaling * (b @ a)


def average_of_deltas(states: list[dict[str, torch.Tensor]], scalings: list[float],
                      rank: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Fusion init (``method.md`` section 3): one LoRA whose delta is the mean of the N deltas.

    Concatenating the A's along the rank and the B's scaled by ``scaling_n / N`` is exact (rank
    sum r_n, scaling 1). With ``rank`` given, each layer's mean delta is reduced to that rank by SVD
    (the best rank-``rank`` approximation). Returns (state, rank); the fused scaling is 1.
    """
    require(len(states) >= 1, "subjects", "expected at least one LoRA to fuse")
    keys = set(states[0])
    require(all(set(s) == keys for s in states), "subjects", "the LoRAs cover different layers "
            "(were they trained on the same base model and scope?)")
    n = len(states)
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in keys})
    fused = {}
    for module in modules:
        a = torch.cat([s[f"{module}.lora_A.weight"].float() for s in states], 0)
        b = torch.cat([s[f"{module}.lora_B.weight"].float() * (c / n) for s, c in zip(states, scalings)], 1)
        if rank is not None and rank < a.shape[0]:
            u, sv, vh = torch.linalg.svd(b @ a, full_matrices=False)
            root = sv[:rank].sqrt()
            b, a = u[:, :rank] * root, root[:, None] * vh[:rank]
        fused[f"{module}.lora_A.weight"], fused[f"{module}.lora_B.weight"] = a.contiguous(), b.contiguous()
    out_rank = fused[f"{modules[0]}.lora_A.weight"].shape[0]
    return fused, out_rank
