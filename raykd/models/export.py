"""Export a trained model from its checkpoint as a standard Hugging Face directory, streamed.

No process holds the whole model: the architecture is built on the meta device, and the output is
written one safetensors shard at a time (``max_shard_bytes``), each weight read alone — a trained one
from the DCP checkpoint, a frozen one from the base model's files — with its LoRA update merged
(``W + scaling * B @ A``) and cast to ``models.save_dtype``. Peak memory: one output shard plus the
largest weight. A model whose frozen weights live in no file (a random-init ``tiny:`` preset) is
rebuilt whole instead. The LoRA adapter is kept under ``adapter/``.

The export runs as a Ray task with one training worker's CPUs (and its GPUs: it needs none, but it
runs where the training ran, never on a 1-CPU side slot of a busy node).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch import nn

from raykd.config import ModelsConfig, TrainConfig
from raykd.data.tokens import load_tokenizer
from raykd.models.hashes import record_model_hash
from raykd.models.load import save_model
from raykd.models.sharded_load import SafetensorsRows, parameters_on_meta, stored_weights, weights_dir
from raykd.training.checkpoints import MODEL_KEY, checkpoint_weight_names, load_trainable

MAX_SHARD_BYTES = 2 << 30
INDEX_FILE = "model.safetensors.index.json"


def output_name(name: str) -> str | None:
    """A parameter's name in the merged Hugging Face model, or None for what merging drops (LoRA
    factors, the frozen original of a trained head)."""
    if ".lora_" in name or ".original_module." in name:
        return None
    name = name.removeprefix("base_model.model.").replace("base_layer.", "")
    return re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)


def lora_updates(model: nn.Module) -> dict[str, tuple[str, str, float, bool]]:
    """Base-layer weight parameter name -> (lora_A name, lora_B name, scaling, fan_in_fan_out) for every
    LoRA-adapted layer (one adapter, as raykd trains)."""
    from peft.tuners.lora import LoraLayer

    updates = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                updates[f"{name}.base_layer.weight"] = (f"{name}.lora_A.{adapter}.weight",
                                                        f"{name}.lora_B.{adapter}.weight",
                                                        module.scaling[adapter], module.fan_in_fan_out)
    return updates


class Weights:
    """Reads full weights: trained ones from the DCP checkpoint (one ``dcp.load`` per group), frozen ones
    from the base model's safetensors files."""

    def __init__(self, model: nn.Module, checkpoint_dir: str, base_dir: str | None):
        self.shapes = {name: p.shape for name, p in model.named_parameters()}
        self.dtypes = {name: p.dtype for name, p in model.named_parameters()}
        self.checkpoint_dir = checkpoint_dir
        self.trained = checkpoint_weight_names(checkpoint_dir)
        self.stored = stored_weights(base_dir) if base_dir else {}
        self.readers: dict[Path, SafetensorsRows] = {}

    def complete(self, model: nn.Module) -> bool:
        """Whether every weight of ``model``'s merged form is in the checkpoint or the base files."""
        return all(n in self.trained or output_name(n) in self.stored
                   for n, _ in model.named_parameters() if output_name(n))

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Parameter name -> its full value, for ``names`` (the trained ones read in one ``dcp.load``)."""
        trained = {n: torch.empty(self.shapes[n], dtype=self.dtypes[n]) for n in names if n in self.trained}
        if trained:
            dcp.load({MODEL_KEY: trained}, checkpoint_id=self.checkpoint_dir, no_dist=True)
        return {n: trained[n] if n in trained else self._stored(output_name(n)) for n in names}

    def _stored(self, hf_name: str) -> torch.Tensor:
        path = self.stored[hf_name]
        reader = self.readers.setdefault(path, SafetensorsRows(path))
        return reader.rows(hf_name, 0, reader.entries[hf_name]["shape"][0])

    def __enter__(self) -> Weights:
        return self

    def __exit__(self, *exc) -> None:
        for reader in self.readers.values():
            reader.close()


def plan_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Output names grouped, in order, into shards of at most ``max_shard_bytes`` (a bigger weight alone)."""
    shards, current, used = [], [], 0
    for name, size in sizes.items():
        if current and used + size > max_shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return shards + [current] if current else shards


def shard_files(count: int) -> list[str]:
    return ["model.safetensors"] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors"
                                                      for i in range(count)]


def write_streamed(model: nn.Module, weights: Weights, out: Path, dtype: torch.dtype, max_shard_bytes: int) -> int:
    """Write the merged weights of ``model`` (built on meta) shard by shard; returns the parameter count."""
    names = {output_name(n): n for n, _ in model.named_parameters() if output_name(n)}
    updates = lora_updates(model)
    sizes = {hf: weights.shapes[n].numel() * dtype.itemsize for hf, n in names.items()}
    groups = plan_shards(sizes, max_shard_bytes)
    files = shard_files(len(groups))
    weight_map = {}
    for group, file in zip(groups, files):
        needed = [names[hf] for hf in group]
        values = weights.read(needed + [f for n in needed if n in updates for f in updates[n][:2]])
        shard = {}
        for hf in group:
            name = names[hf]
            value = values.pop(name).float()
            if name in updates:
                a_name, b_name, scaling, fan_in_fan_out = updates[name]
                delta = values[b_name].float() @ values[a_name].float()
                value += scaling * (delta.T if fan_in_fan_out else delta)
            shard[hf] = value.to(dtype).contiguous()
            weight_map[hf] = file
        del values
        save_file(shard, str(out / file), metadata={"format": "pt"})
        del shard
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return sum(weights.shapes[n].numel() for n in names.values())


def export_streamed(model: nn.Module, weights: Weights, base_dir: str | None, tokenizer_dir: str, out_dir: str,
                    models: ModelsConfig, max_shard_bytes: int = MAX_SHARD_BYTES) -> int:
    """Stream ``model``'s (built on meta) trained and base weights into ``out_dir`` (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, models.save_dtype)
    params = write_streamed(model, weights, out, dtype, max_shard_bytes)
    if hasattr(model, "peft_config"):  # the adapter alone, from the trained weights
        model.save_pretrained(str(out / "adapter"), state_dict=weights.read(sorted(weights.trained)))
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    hf.config.dtype = dtype
    hf.config.save_pretrained(out)
    generation = Path(base_dir or "", "generation_config.json")
    if base_dir and generation.exists():  # the base's own (stop ids, sampling defaults)
        shutil.copy(generation, out / generation.name)
    elif hf.can_generate():
        hf.generation_config.save_pretrained(out)
    load_tokenizer(tokenizer_dir, models.trust_remote_code).save_pretrained(out)
    return params


def export_model(build: Callable[[bool], nn.Module], spec: str, checkpoint_dir: str, tokenizer_dir: str,
                 out_dir: str, models: ModelsConfig, max_shard_bytes: int = MAX_SHARD_BYTES) -> int:
    """The trained model of ``checkpoint_dir`` written to ``out_dir`` (streamed where its frozen weights
    are in ``spec``'s files), with its content hash recorded. Returns its parameter count."""
    with parameters_on_meta():
        skeleton = build(False)
    base = weights_dir(spec)
    with Weights(skeleton, checkpoint_dir, base) as weights:
        streamed = weights.complete(skeleton)
        if streamed:
            params = export_streamed(skeleton, weights, base, tokenizer_dir, out_dir, models, max_shard_bytes)
    if not streamed:  # frozen weights that exist only once built (a seeded random-init preset): small by nature
        model = build(True)
        load_trainable(model, checkpoint_dir)
        params = save_model(model, tokenizer_dir, out_dir, models.save_dtype, models.trust_remote_code)
    record_model_hash(out_dir)
    return params


@ray.remote
def _export_task(build, spec: str, checkpoint: ray.train.Checkpoint, tokenizer_dir: str, out_dir: str,
                 models: ModelsConfig) -> int:
    with checkpoint.as_directory() as d:
        return export_model(build, spec, d, tokenizer_dir, out_dir, models)


def export_checkpoint(build: Callable[[bool], nn.Module], spec: str, checkpoint: ray.train.Checkpoint,
                      tokenizer_dir: str, out_dir: str, models: ModelsConfig, stage: TrainConfig) -> int:
    """``export_model`` as a Ray task with one training worker's resources; ``build(weights)`` builds the
    model as trained (see ``raykd.models.teacher.build_teacher``)."""
    task = _export_task.options(num_cpus=stage.cpus_per_worker, num_gpus=stage.gpus_per_worker)
    return ray.get(task.remote(build, spec, checkpoint, tokenizer_dir, out_dir, models))

