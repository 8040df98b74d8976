"""Sharded loading for FSDP2: build on the meta device, shard, then each rank reads only its own rows of
every weight from the safetensors files — no rank ever holds the whole model, nor moves it to a device.

Order: the model (base, LoRA, task head) is built with its parameters on the meta device and its buffers
real (rotary tables, position ids: small, and computed at construction); parameters the files do not hold
(LoRA adapters, a new classifier head) are initialised for real on the CPU, seeded, so every rank has the
same values; everything goes to meta, ``fully_shard`` lays out each rank's shards, ``to_empty``
allocates them, and each shard is filled from its rows of the file (or of the fresh value).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from raykd.config import TrainConfig

Rows = Callable[[int, int], torch.Tensor]  # (start, stop) -> those rows of a full weight


@contextlib.contextmanager
def parameters_on_meta():
    """Parameters registered inside land on the meta device (no memory, init is a no-op); buffers stay
    real, so values computed at construction (rotary frequencies, position ids) survive."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def shard_rows(rows: int, rank: int, world: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of dim 0 that FSDP2's default ``Shard(0)`` gives ``rank``: ``torch.chunk``'s
    split, ``ceil(rows / world)`` each, the last ranks shorter or empty."""
    size = -(-rows // world)
    start = min(rank * size, rows)
    return start, min(start + size, rows)


def file_names(model: nn.Module) -> dict[str, str]:
    """Each parameter's name as a Hugging Face checkpoint spells it: without peft's ``base_model.model.``
    prefix and ``base_layer.`` hops. Tied parameters appear once, under their first name."""
    from peft import PeftModel

    prefix = "base_model.model." if isinstance(model, PeftModel) else ""
    names = {}
    for name, _ in model.named_parameters():
        plain = name[len(prefix):] if name.startswith(prefix) else name
        names[name] = plain.replace("base_layer.", "")
    return names


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


class SafetensorsRows:
    """Row ranges of the tensors of one safetensors file, read with plain reads into fresh buffers. Not a
    memory map: the pages a rank touched in a map would count in its resident memory, while read() leaves
    them to the page cache."""

    def __init__(self, path: Path):
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close(), through the caller's ExitStack)
        size = int.from_bytes(self.file.read(8), "little")
        self.entries = json.loads(self.file.read(size))
        self.entries.pop("__metadata__", None)
        self.data_start = 8 + size

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of dim 0 of tensor ``key``, in its stored dtype."""
        entry = self.entries[key]
        dtype, shape = SAFETENSORS_DTYPES[entry["dtype"]], entry["shape"]
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        buffer = bytearray((stop - start) * row_bytes)
        self.file.seek(self.data_start + entry["data_offsets"][0] + start * row_bytes)
        if self.file.readinto(buffer) != len(buffer):
            raise ValueError(f"{self.file.name}: {key} is truncated")
        return torch.frombuffer(buffer, dtype=dtype).reshape(stop - start, *shape[1:])

    def close(self) -> None:
        self.file.close()


def stored_weights(weights_dir: str) -> dict[str, Path]:
    """Every weight name of a model directory's safetensors files (one file or an indexed set) -> its file."""
    stored = {}
    for path in sorted(Path(weights_dir).glob("*.safetensors")):
        reader = SafetensorsRows(path)
        stored |= dict.fromkeys(reader.entries, path)
        reader.close()
    return stored


def match_stored(model: nn.Module, stored: dict[str, Path]) -> dict[str, str]:
    """Parameter name -> stored weight name, for the parameters the files hold. A stored name may lack
    or carry the architecture's ``base_model_prefix`` (a backbone saved alone, or inside a task model)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(hf, "base_model_prefix", "") + "."
    matched = {}
    for name, plain in file_names(model).items():
        for candidate in (plain, plain.removeprefix(prefix), prefix + plain):
            if candidate in stored:
                matched[name] = candidate
                break
    return matched


def init_fresh(model: nn.Module, fresh: set[str], seed: int) -> None:
    """Materialise on the CPU and initialise the parameters no file holds: LoRA adapters as peft does
    (A Kaiming-uniform, B zero), anything else (a new task head) by the model's own ``_init_weights``.
    Seeded, so every rank computes the same values."""
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(seed)
    owners = {name.rsplit(".", 1)[0] for name in fresh}
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in fresh:  # only these: an owner's stored weights and real buffers stay as they are
        owner, attr = name.rsplit(".", 1)
        module = model.get_submodule(owner)
        meta = getattr(module, attr)
        setattr(module, attr, nn.Parameter(torch.empty_like(meta, device="cpu"), requires_grad=meta.requires_grad))
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, model.peft_config[adapter].init_lora_weights)
    for name, module in model.named_modules():
        if name in owners and not any(p in name.split(".") for p in ("lora_A", "lora_B")):
            hf._init_weights(module)


def check_fresh(model: nn.Module, fresh: set[str]) -> None:
    """A transformer block's weight that no file holds means the files are not this architecture's (or
    are named otherwise): refuse rather than train on random weights."""
    from raykd.models.load import transformer_blocks

    blocks = transformer_blocks(model)
    prefix = next(name for name, module in model.named_modules() if module is blocks) + "."
    unexpected = sorted(n for n in fresh if n.startswith(prefix) and ".lora_" not in n)
    if unexpected:
        raise ValueError(f"the model files hold no weight for {len(unexpected)} block parameters, e.g. "
                         f"{unexpected[0]}: they are not this architecture's")


def fill_local_shards(model: nn.Module, sources: dict[str, Rows], rank: int, world: int) -> None:
    """Copy into each (sharded or whole) parameter its rows of the full weight ``sources[name]``."""
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        for name, param in model.named_parameters():
            local = param.to_local() if isinstance(param, DTensor) else param
            start, stop = shard_rows(param.shape[0], rank, world) if isinstance(param, DTensor) else (0, param.shape[0])
            if local.shape[0] != stop - start:
                raise RuntimeError(f"{name}: local shard has {local.shape[0]} rows, expected {stop - start}")
            if stop > start:
                local.copy_(sources[name](start, stop))


def load_sharded(build: Callable[[], nn.Module], weights_dir: str, shard: Callable[[nn.Module], None],
                 device: torch.device, rank: int, world: int, seed: int) -> nn.Module:
    """``build()`` (called inside ``parameters_on_meta``; it must construct, not load) sharded by
    ``shard(model)`` (``fully_shard`` per block and root), its local shards filled from ``weights_dir``."""
    with parameters_on_meta():
        model = build()
    stored = stored_weights(weights_dir)
    matched = match_stored(model, stored)
    fresh = set(file_names(model)) - set(matched)
    check_fresh(model, fresh)
    init_fresh(model, fresh, seed)
    params = dict(model.named_parameters())
    fresh_values = {name: params[name].detach().clone() for name in fresh}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to("meta")
    shard(model)
    model.to_empty(device=device)
    with contextlib.ExitStack() as stack:
        files = {path: SafetensorsRows(path) for path in set(stored.values())}
        for reader in files.values():
            stack.callback(reader.close)

        def file_rows(key: str) -> Rows:
            return lambda start, stop: files[stored[key]].rows(key, start, stop)

        sources = {name: file_rows(key) for name, key in matched.items()}
        sources |= {name: (lambda start, stop, v=value: v[start:stop]) for name, value in fresh_values.items()}
        fill_local_shards(model, sources, rank, world)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return model


def weights_dir(spec: str) -> str | None:
    """The directory of safetensors files a model spec names, or None (a preset, teacher blocks)."""
    from raykd.models.load import resolve_model

    path = Path(resolve_model(spec))
    return str(path) if path.is_dir() and any(path.glob("*.safetensors")) else None


def training_model(build: Callable[[bool], nn.Module], spec: str, stage: TrainConfig, device: torch.device,
                   rank: int, world: int, bf16: bool, seed: int) -> tuple[nn.Module, set[str]]:
    """The model a training worker trains, and its trainable parameters' names. FSDP2 over several workers
    from a weights directory: built on meta and loaded shard by shard (``load_sharded``); otherwise built
    whole by ``build(True)`` and wrapped (``shard_model``). ``build(weights)`` builds the model, reading
    its weights or not."""
    from raykd.models.load import fully_shard_model, shard_model

    directory = weights_dir(spec)
    if stage.sharding == "fsdp" and world > 1 and directory is not None:
        def shard(model: nn.Module) -> None:
            fully_shard_model(model, device, world, stage.activation_checkpointing, bf16)

        if rank == 0:
            print(f"[load] FSDP2 over {world} workers: each reads only its rows of the weights in {directory}",
                  flush=True)
        model = load_sharded(lambda: build(False), directory, shard, device, rank, world, seed)
        return model, {n for n, p in model.named_parameters() if p.requires_grad}
    model = build(True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return shard_model(model, stage.sharding, device, world, stage.activation_checkpointing, bf16), trainable
