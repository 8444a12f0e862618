"""What a stage costs, without running it: its FLOPs and the peak memory a GPU run would need.

The stage runs for real (the engine's own functions: ``predict_noise``, the losses, LoRA injection,
gradient checkpointing, ``scs_sample``, ``decode_latents``), but on a *fake twin* of the model: the
same configs and dtypes, built under ``FakeTensorMode`` so no weight or activation is allocated.
:class:`StorageTally` counts every storage an op creates for as long as it is alive (a weak
reference per storage) and keeps the maximum of their sum: the allocator peak, as
``torch.cuda.max_memory_allocated`` reports it, each storage rounded up to the CUDA caching
allocator's 512-byte blocks. :class:`~torch.utils.flop_counter.FlopCounterMode` counts the FLOPs
with its formulas (matmuls, convolutions, attention; forward, backward and checkpointing's
recomputation), counted in the same dispatch mode: ``FlopCounterMode`` itself holds every module's
output until its backward (defeating checkpointing in the tally) and misses CPU flash attention.

Not in the tally (so not in ``peak_bytes``): the CUDA context, cuDNN / cuBLAS workspaces and the
allocator's fragmentation; :mod:`videomage_core.preflight` adds a stated margin for them.
Attention kernels are those of the CPU (flash attention: output + log-sum-exp, as CUDA's).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .errors import require

BLOCK = 512  # the CUDA caching allocator rounds every allocation up to 512 bytes
REL_SLACK = 0.002  # the stage estimates' peak is exact to 0.2 % (see StorageTally)
STAGES = ("subject", "motion", "fusion", "scs_guided", "scs_unguided", "sample", "vae_decode",
          "inversion", "ddim_invert")


class StorageTally(TorchDispatchMode):
    """Live storages and their peak total, for fake or real tensors.

    Every tensor an op returns has its storage recorded once (views share it) until the storage
    dies. ``peak`` is the largest total seen; :meth:`reset_peak` starts a new measurement from
    what is alive now. Storages given to :meth:`register` (weights) are counted as alive for good.
    ``flops`` sums :data:`FLOP_FORMULAS` over the ops run. ``Tensor.item()`` of a fake tensor (which
    it cannot answer) returns a placeholder (``True`` / ``0`` /
    ``1.0``): the traced code takes the branch a real tensor usually takes.

    Finding the dead storages costs a pass over the live ones, so it runs only when the running
    sum (dead ones included) passes ``peak + slack``, ``slack = rel_slack * peak``: the true peak is
    in ``[peak, peak + slack]``. ``rel_slack=0`` gives the exact peak (a pass per allocation).
    """

    def __init__(self, block: int = BLOCK, rel_slack: float = 0.0):
        super().__init__()
        self.block, self.rel_slack = block, rel_slack
        self.static: dict[int, tuple[StorageWeakRef, int]] = {}  # registered: alive throughout
        self.elsewhere: dict[int, StorageWeakRef] = {}  # ignored: not on the device
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.static_total = 0
        self.flops = 0
        self.total = 0  # static + every live entry, dead ones included until the next prune
        self.peak = 0

    def _size(self, storage) -> int:
        n = storage.nbytes()
        return -(-n // self.block) * self.block if self.block > 1 else n

    def _known(self, cdata: int) -> bool:
        if cdata in self.static or cdata in self.elsewhere:
            return True
        old = self.live.get(cdata)
        if old is None:
            return False
        if not old[0].expired():
            return True
        self.total -= self.live.pop(cdata)[1]
        return False

    def add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        ref = StorageWeakRef(storage)
        if self._known(ref.cdata):
            return
        size = self._size(storage)
        self.live[ref.cdata] = (ref, size)
        self.total += size
        if self.total > self.peak * (1 + self.rel_slack):  # only then can the true total pass the peak
            self.peak = max(self.peak, self.prune())

    def ignore(self, tensors) -> None:
        """Never count these storages (weights kept off the device: a parked text encoder), nor the
        views of them an op returns."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                self.elsewhere[ref.cdata] = ref

    def register(self, tensors) -> None:
        """Count tensors made outside the tally (weights, inputs) as alive for good."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if not self._known(ref.cdata):
                    size = self._size(t.untyped_storage())
                    self.static[ref.cdata] = (ref, size)
                    self.static_total += size
                    self.total += size
        self.peak = max(self.peak, self.total)

    def prune(self) -> int:
        """Drop the dead storages; returns the exact total alive."""
        expired = torch.Storage._expired
        dead = [k for k in self.live if expired(k)]
        for k in dead:
            self.total -= self.live.pop(k)[1]
        return self.total

    def reset_peak(self) -> int:
        self.peak = self.prune()
        return self.peak

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            if _is_fake(args[0]):
                dtype = args[0].dtype
                return True if dtype == torch.bool else (1.0 if dtype.is_floating_point else 0)
            from torch._subclasses.fake_tensor import unset_fake_temporarily

            with unset_fake_temporarily():  # a real tensor (a scheduler's timesteps) has a real value
                return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FLOP_FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out


def _is_fake(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _flop_formulas() -> dict:
    """``torch.utils.flop_counter``'s formulas (what ``FlopCounterMode`` counts), plus the CPU flash
    attention kernels, which it lacks (same arguments first as CUDA's flash attention)."""
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    table = dict(flop_registry)
    table[aten._scaled_dot_product_flash_attention_for_cpu] = table[aten._scaled_dot_product_flash_attention]
    table[aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
        table[aten._scaled_dot_product_flash_attention_backward]
    return table


FLOP_FORMULAS = _flop_formulas()


def count_flops(fn, *args, **kwargs) -> tuple[int, object]:
    """(FLOPs of ``fn(*args, **kwargs)``, its result): matmuls, convolutions and attention, forward
    and backward, by ``torch.utils.flop_counter``'s formulas."""
    tally = StorageTally()
    with tally:
        out = fn(*args, **kwargs)
    return tally.flops, out


@dataclass
class StageCost:
    """One stage's cost. Bytes are allocator bytes (512-byte blocks)."""

    stage: str
    spec: dict
    flops: int
    peak_bytes: int  # everything alive at the worst moment of one step
    weights_bytes: int  # the frozen base model (UNet + text encoder + VAE), loaded before any stage
    resident_bytes: int  # alive when the step starts: weights, LoRA, tokens, optimiser moments, inputs

    @property
    def extra_bytes(self) -> int:
        """What the stage needs on top of the loaded model."""
        return self.peak_bytes - self.weights_bytes

    def as_dict(self) -> dict:
        gib = 2 ** 30
        return {"stage": self.stage, **self.spec, "tflops": round(self.flops / 1e12, 3),
                "peak_gib": round(self.peak_bytes / gib, 3),
                "weights_gib": round(self.weights_bytes / gib, 3),
                "resident_gib": round(self.resident_bytes / gib, 3),
                "activations_gib": round((self.peak_bytes - self.resident_bytes) / gib, 3)}


@dataclass(frozen=True)
class StageSpec:
    """What a stage runs on. ``frames`` is the video's frame count (the subject step's prior video;
    the images are one frame each); ``images``: subject images or reference crops; ``rank``: the
    trained LoRA's (fusion: the fused rank, the sum of the subjects')."""

    stage: str
    frames: int = 24
    height: int = 320
    width: int = 576
    checkpointing: bool = False
    images: int = 4
    rank: int = 4
    levels: tuple | None = None  # recorded attention levels (None: the model's)
    coverage: str = "attention"  # the motion LoRA's layers (videomage_core.bases.COVERAGES)

    def check(self) -> None:
        require(self.stage in STAGES, "stage", f"expected one of {STAGES}, got '{self.stage}'")
        require(self.frames >= 1 and self.height % 8 == 0 and self.width % 8 == 0, "size",
                f"expected frames >= 1 and a size in multiples of 8, got {self.frames} x {self.height} x "
                f"{self.width}")


# ---- the fake twin -----------------------------------------------------------------------------
@contextlib.contextmanager
def fake_conversions():
    """Let ``Module.to`` convert fake parameters (peft moves each new LoRA layer to its base's
    dtype; ``inject_lora`` then to fp32). ``_apply`` swaps fake parameters, and a swap refuses a
    tensor with a weak reference, which ``FakeTensorMode`` keeps to every fake tensor it makes:
    for those, assign ``.data`` instead (the same result for a parameter without a gradient)."""
    from torch._subclasses.fake_tensor import FakeTensor

    original = torch.utils.swap_tensors

    def swap(t1, t2):
        if isinstance(t1, FakeTensor) and isinstance(t2, FakeTensor):
            t1.data = t2.data
            return
        original(t1, t2)

    torch.utils.swap_tensors = swap
    try:
        yield
    finally:
        torch.utils.swap_tensors = original


@contextlib.contextmanager
def _default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _copies_outside_fake_mode(obj):
    """Make ``copy.deepcopy(obj)`` (the samplers copy the scheduler) run with fake mode off: its
    real tensors cannot be cloned inside it."""
    def deepcopy(memo, _obj=obj):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        hook = _obj.__dict__.pop("__deepcopy__")
        try:
            with unset_fake_temporarily():
                return copy.deepcopy(_obj, memo)
        finally:
            _obj.__deepcopy__ = hook

    obj.__deepcopy__ = deepcopy
    return obj


def build_twin(unet_config: dict, text_config: dict, vae_config: dict, tokenizer, scheduler,
               dtype: torch.dtype, vae_dtype: torch.dtype | None = None, settings: dict | None = None,
               base: str = "zeroscope"):
    """A :class:`VideoMageModel` with fake weights of these configs (no memory is allocated); the
    denoiser is ``base``'s family's (:mod:`videomage_core.bases`).

    Modules are built under ``torch.set_default_dtype`` (``.to(dtype)`` on fake parameters fails).
    ``vae_dtype`` defaults to ``load_model``'s rule: fp32 under an fp16 model, else ``dtype``.
    """
    from diffusers import AutoencoderKL
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import CLIPTextConfig, CLIPTextModel

    from .model import VideoMageModel

    vae_dtype = vae_dtype or (torch.float32 if dtype == torch.float16 else dtype)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        with _default_dtype(dtype):
            from .bases import family

            fam = family(base)
            unet = fam.unet_from_config(unet_config)
            text = (fam.text_from_config(text_config) if hasattr(fam, "text_from_config")
                    else CLIPTextModel(CLIPTextConfig(**text_config)))
        with _default_dtype(vae_dtype):
            vae = fam.vae_from_config(vae_config) if hasattr(fam, "vae_from_config") else AutoencoderKL.from_config(vae_config)
    for m in (unet, vae, text):
        m.requires_grad_(False).eval()
    twin = VideoMageModel(unet=unet, vae=vae, text_encoder=text, tokenizer=copy.deepcopy(tokenizer),
                          scheduler=_copies_outside_fake_mode(copy.deepcopy(scheduler)), path="fake twin",
                          fingerprint="fake-twin",
                          device=torch.device("cpu"), dtype=dtype, settings=dict(settings or {}))
    twin._fake_mode = mode
    return twin


def _text_config(text_encoder) -> dict:
    skip = {"architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "model_type"}
    return {k: v for k, v in text_encoder.config.to_dict().items() if k not in skip}


def twin_of(model, dtype: torch.dtype | None = None):
    """The fake twin of a loaded model, in its dtypes (or ``dtype`` with load_model's VAE rule)."""
    tok_size = model.text_encoder.get_input_embeddings().weight.shape[0]
    text_cfg = {**_text_config(model.text_encoder), "vocab_size": tok_size}
    vae_dtype = None if dtype is not None else next(model.vae.parameters()).dtype
    twin = build_twin(dict(model.unet.config), text_cfg, dict(model.vae.config), model.tokenizer,
                      model.scheduler, dtype or model.dtype, vae_dtype, model.settings, model.family.NAME)
    from .tokens import TokenEmbeddings, token_embeddings

    real = model.text_encoder.get_input_embeddings()
    if isinstance(real, TokenEmbeddings):  # the same added-token rows as the model (ids from base_vocab)
        with twin._fake_mode:
            emb = token_embeddings(twin)
            emb.base_vocab = real.base_vocab
            for row in real.rows:
                zeros = torch.zeros(row.shape, dtype=row.dtype)
                emb.rows.append(torch.nn.Parameter(zeros, requires_grad=False))
    return twin


def real_size_twin(base: str = "zeroscope", dtype: torch.dtype = torch.bfloat16, tokenizer=None):
    """The full-size model of ``base`` (its family's ``real_size()`` configs), fake weights.

    The tokenizer is the built-in tiny one unless given (its ids fit the real embedding table); it only
    decides which columns a prompt's words take, not the cost.
    """
    import tempfile

    from transformers import CLIPTokenizer

    from .bases import family
    from .tiny import build_tiny_tokenizer

    fam = family(base)
    if tokenizer is None:
        with tempfile.TemporaryDirectory() as tmp:
            if hasattr(fam, "tiny_tokenizer"):
                from transformers import AutoTokenizer

                fam.tiny_tokenizer(tmp)
                tokenizer = AutoTokenizer.from_pretrained(tmp)
            else:
                build_tiny_tokenizer(tmp)
                tokenizer = CLIPTokenizer.from_pretrained(tmp)
    real = fam.real_size()
    return build_twin(real["unet"], real["text"], real["vae"], tokenizer, real["scheduler"], dtype, base=base)


def zeroscope_twin(dtype: torch.dtype = torch.bfloat16, tokenizer=None):
    """ZeroScope v2 576w's exact architecture (1.41 B-parameter UNet3D), fake weights."""
    return real_size_twin("zeroscope", dtype, tokenizer)


def _resident_modules(twin, stage: str | None = None):
    """The modules on the GPU during ``stage``: all three, except a text encoder the engine parks on the CPU
    while the stage runs on cached text (:func:`videomage_core.model.text_encoder_parked`)."""
    from .model import TEXT_ENCODER_STAGES, parks_text_encoder

    parked = stage is not None and parks_text_encoder(twin) and stage not in TEXT_ENCODER_STAGES
    return (twin.unet, twin.vae) if parked else (twin.unet, twin.text_encoder, twin.vae)


def _module_tensors(twin, stage: str | None = None):
    for m in _resident_modules(twin, stage):
        yield from m.parameters()
        yield from m.buffers()


def base_weight_bytes(twin, stage: str | None = None) -> int:
    """The frozen base model's bytes on the GPU during ``stage`` (LoRA weights and token rows excluded)."""
    tally = StorageTally()
    for m in _resident_modules(twin, stage):
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if "lora_" not in name and ".rows." not in name:
                tally.add(t)
    return tally.total


def run_stage(twin, spec: StageSpec, before_step=None) -> StageCost:
    """Run one step of ``spec.stage`` on the fake ``twin``: its FLOPs and peak memory.

    A training stage takes one optimiser step (AdamW, as ``run_training``) after a first one that
    creates the moments, so the step is measured as every step but the first runs: moments alive.
    On a real model (no fake mode) the same code runs for real, and ``before_step()`` is called
    right before the step (the estimator's check measures the process's peak memory from there).
    """
    from .checkpointing import set_gradient_checkpointing
    from .cost_stages import BUILDERS, add_tokens, loss_scale, sampling_step, scaled_backward
    from .lora import delete_lora

    spec.check()
    adapters: list[str] = []
    tally = StorageTally(rel_slack=REL_SLACK)
    fake = getattr(twin, "_fake_mode", None)
    with fake_conversions(), fake or contextlib.nullcontext(), tally:
        try:
            add_tokens(twin)
            tally.register(_module_tensors(twin, spec.stage))
            parked = [m for m in (twin.text_encoder,) if m not in _resident_modules(twin, spec.stage)]
            tally.ignore([t for m in parked for t in (*m.parameters(), *m.buffers())])
            build = BUILDERS.get(spec.stage, sampling_step)
            groups, step = build(twin, spec, adapters)
            tally.register(_module_tensors(twin, spec.stage))  # LoRA weights made by peft's own constructors
            set_gradient_checkpointing(twin.unet, spec.checkpointing and bool(groups))
            opt = None
            if groups:
                params = [p for g in groups for p in g.params]
                opt = torch.optim.AdamW([{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay}
                                         for g in groups], eps=1e-8)
                for p in params:
                    p.grad = torch.zeros_like(p)
                opt.step()
                opt.zero_grad(set_to_none=True)
            resident = tally.reset_peak()
            tally.flops = 0
            if before_step is not None:
                before_step()

            def one_step():
                loss = step()
                if opt is not None:
                    if isinstance(loss, torch.Tensor) and loss.requires_grad:
                        scaled_backward(twin, loss)
                    scale = loss_scale(twin)
                    if scale is not None:
                        scale.unscale(params)
                    opt.step()
                    opt.zero_grad(set_to_none=True)

            one_step()
            flops, peak = tally.flops, max(tally.peak, tally.prune())
        finally:
            set_gradient_checkpointing(twin.unet, False)
            for name in adapters:
                delete_lora(twin, name)
            from .tokens import token_parameters
            token_parameters(twin, [])
    info = {"frames": spec.frames, "height": spec.height, "width": spec.width,
            "dtype": str(twin.dtype).replace("torch.", ""), "checkpointing": spec.checkpointing}
    if spec.stage in ("subject", "inversion"):
        info["images"] = spec.images
    return StageCost(spec.stage, info, int(flops), int(peak), base_weight_bytes(twin, spec.stage), int(resident))
