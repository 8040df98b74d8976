"""The fine-tune job run as a user runs it: a real process, a real local Ray, real checkpoints."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from raykd.builtin.data import generate_split
from raykd.models.hashes import HASH_FILE, model_hash
from raykd.pipeline.console import terminal_line
from raykd.training.checkpoints import checkpoint_weight_names
from tests.conftest import DEMO, REPO, raykd, read_metrics
from tests.ray_jobs.train_faults import latest_checkpoint, train_worker_pids, wait_for

pytestmark = pytest.mark.slow


def test_a_data_error_inside_ray_data_reaches_the_user_as_one_line(head_env, tmp_path):
    """The null is found by the tokenizing map inside Ray Data (not by the field check on the driver):
    the user still sees one line naming the file and the field, and exit 2."""
    rows = generate_split("train")
    rows[150]["completion"] = None
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = raykd("finetune", "--config", str(DEMO), f"run_dir={tmp_path / 'run'}", f"data.train={train}",
                 check=False, env=head_env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"raykd: error: {train}: line 151: field 'completion' is missing or null; fill or drop such rows"


def same_ends(a: Path, b: Path, size: int = 1 << 20) -> bool:
    """Same size and the same first and last ``size`` bytes: what a quick fingerprint would compare."""
    x, y = a.read_bytes(), b.read_bytes()
    return len(x) == len(y) and x[:size] == y[:size] and x[-size:] == y[-size:]


def test_a_second_finetune_with_new_knobs_trains_afresh_and_is_another_teacher(tmp_path, teacher_run, head_env):
    """New knobs retrain. The two LoRA teachers of one base (adapters on q_proj only, so their weight
    files have the same size and the same first and last MiB) get different hashes, and a cache made
    by another teacher is refused for the new one."""
    args = ["finetune", "--config", str(DEMO), f"run_dir={tmp_path}", "finetune.steps=4", "finetune.warmup_steps=1",
            "finetune.lora_target_modules=[q_proj]", "data.eval_examples=16"]
    raykd(*args, env=head_env)
    first = tmp_path / "first_teacher"
    shutil.copytree(tmp_path / "teacher", first)
    changed = raykd(*args, "finetune.lr=1e-2", env=head_env)
    assert "training afresh" in changed.stdout and read_metrics(tmp_path, "teacher")["resumed_from_step"] == 0
    shown = changed.stdout.splitlines()  # the terminal: raykd's lines only, Ray's in RUN/logs/finetune.log
    assert all(terminal_line(line) == line for line in shown) and changed.stderr == "", changed.stdout + changed.stderr
    assert "Started training worker group" in (tmp_path / "logs" / "finetune.log").read_text()
    assert len(list((tmp_path / "checkpoints").glob("finetune-*"))) == 2  # one run per set of inputs

    second = tmp_path / "teacher"
    assert same_ends(first / "model.safetensors", second / "model.safetensors")
    assert model_hash(str(first)) != model_hash(str(second))
    assert json.loads((second / HASH_FILE).read_text())["hash"] == model_hash(str(second))  # the export's record
    run, overrides = teacher_run  # another teacher's cache
    proc = raykd("distill", "--config", str(DEMO), *overrides, f"cache.teacher={second}", check=False, timeout=300,
                 env=head_env)
    assert proc.returncode == 2 and "cache was made by another teacher" in proc.stderr


def test_fsdp_lora_survives_sigkills_and_resumes_on_one_worker_from_per_rank_shards(head_env, tmp_path):
    """2 FSDP2 workers: one SIGKILLed (the worker group restarts from the last checkpoint), then the whole
    run SIGKILLed. The checkpoint holds one DCP shard file per rank and no frozen base weight. The same run
    (same global batch) re-run on 1 worker resumes it and ends at exactly the configured step."""
    run = tmp_path / "run"
    args = ["finetune", "--config", str(DEMO), f"run_dir={run}", "finetune.sharding=fsdp", "finetune.method=lora",
            "finetune.steps=40", "finetune.checkpoint_every=10", "finetune.log_every=5",
            "finetune.activation_checkpointing=true"]  # FSDP2 over checkpointed blocks
    log = tmp_path / "two_workers.log"
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", *args, "finetune.workers=2", "finetune.batch_size=8"],
                            cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: latest_checkpoint(run), 600, "a registered checkpoint")
        os.kill(wait_for(lambda: train_worker_pids(proc.pid), 60, "a train worker")[0], signal.SIGKILL)
        step, checkpoint = wait_for(lambda: (latest_checkpoint(run) or (0,))[0] >= 20 and latest_checkpoint(run),
                                    600, "a checkpoint after the restart")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray
        proc.wait(timeout=60)
    assert "resumed from checkpoint at step 10" in log.read_text(), log.read_text()[-3000:]
    files = {p.name for p in checkpoint.iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "state.json"} <= files, files
    saved = checkpoint_weight_names(str(checkpoint))
    assert saved and all(".lora_A." in n or ".lora_B." in n for n in saved)  # no frozen base weight

    resumed = raykd(*args, "finetune.workers=1", "finetune.batch_size=16", env=head_env)  # on another cluster
    assert f"resumed from checkpoint at step {step}" in resumed.stdout
    metrics = read_metrics(run, "teacher")
    assert metrics["steps"] == 40 and metrics["resumed_from_step"] == step
    assert metrics["eval_loss"] < metrics["base_eval_loss"]
    assert metrics["eval_score"] > metrics["base_eval_score"]
    tokenizer = AutoTokenizer.from_pretrained(run / "teacher")
    model = AutoModelForCausalLM.from_pretrained(run / "teacher")
    ids = tokenizer("reverse: fox cat\nanswer:", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert (run / "teacher" / "adapter" / "adapter_config.json").exists()


def test_classifier_beats_chance_with_ddp_full_finetune(head_env, tmp_path):
    raykd("finetune", "--config", str(REPO / "configs" / "classification.yaml"), f"run_dir={tmp_path}",
          "finetune.workers=2", "finetune.sharding=ddp", "finetune.method=full", "finetune.lr=5e-4",
          "finetune.steps=40", env=head_env)
    metrics = read_metrics(tmp_path, "teacher")
    assert metrics["steps"] == 40 and metrics["eval_score"] > 0.6  # chance is 1/3
