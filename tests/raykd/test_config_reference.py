"""The config reference comes from the knob() declarations: docs/config.md, --help, `raykd config`."""

import dataclasses

import pytest
import yaml

from raykd.config import RaykdConfig, load_config
from raykd.config_reference import DOCS_PAGE, knobs, markdown, selected
from raykd.pipeline.state import STAGES
from tests.conftest import DEMO, REPO, raykd_here


def flat_keys(value, prefix: str = "") -> list[str]:
    if not dataclasses.is_dataclass(value):
        return [prefix[:-1]]
    return [k for f in dataclasses.fields(value) for k in flat_keys(getattr(value, f.name), f"{prefix}{f.name}.")]


def test_the_config_page_is_what_the_declarations_generate():
    page = REPO / DOCS_PAGE
    assert page.read_text() == markdown(), f"stale: run `python -m raykd.config_reference > {DOCS_PAGE}`"


def test_every_key_is_documented_once_with_its_help():
    keys = [k.key for k in knobs()]
    assert keys == flat_keys(RaykdConfig()) and len(set(keys)) == len(keys)
    page = markdown()
    assert all(page.count(f"| `{k.key}` |") == 1 and k.help.replace("|", "\\|") in page for k in knobs())
    alpha = next(k for k in knobs() if k.key == "distill.alpha")
    assert (alpha.default, alpha.type, alpha.allowed) == (0.5, "float", ">= 0 and <= 1")
    assert next(k for k in knobs() if k.key == "distill.loss").allowed == "one of: forward_kl, reverse_kl, jsd, tvd"


def test_a_stage_lists_the_sections_it_reads_less_what_it_drops():
    finetune = {k.key for k in selected(knobs(), STAGES["finetune"].reads)}
    assert "finetune.lr" in finetune and "data.train" in finetune and "models.teacher" in finetune
    assert not {"models.student", "data.unlabeled", "data.test"} & finetune
    assert not any(k.startswith(("distill.", "serve.", "cache.")) for k in finetune)


def run(capsys, *args: str) -> tuple[int, str, str]:
    done = raykd_here(capsys, *args)
    return done.returncode, done.stdout, done.stderr


def test_stage_help_lists_its_keys_with_default_range_and_help(capsys):
    code, out, _ = run(capsys, "distill", "--help")
    assert code == 0
    assert "  distill.alpha = 0.5  (float; >= 0 and <= 1)\n      weight of the soft (KD) loss" in out
    assert "distill.jsd_beta" in out and "finetune.lr" not in out and "serve.port" not in out


@pytest.mark.parametrize("command", ["finetune", "cache", "evaluate", "tune", "serve", "compare", "pipeline",
                                     "demo", "config", "plan"])
def test_every_config_command_has_help_with_keys(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "config keys" in out and "run_dir = runs/demo" in out


def test_config_prints_the_resolved_config_that_loads_back_the_same(capsys, tmp_path):
    code, out, _ = run(capsys, "config", "--config", str(DEMO), "distill.alpha=0.7", "tune.num_samples=2")
    assert code == 0
    printed = tmp_path / "resolved.yaml"
    printed.write_text(out)
    resolved = load_config(DEMO, ["distill.alpha=0.7", "tune.num_samples=2"])
    assert yaml.safe_load(out)["distill"]["alpha"] == 0.7
    assert load_config(printed).to_dict() == resolved.to_dict()


@pytest.mark.parametrize("override, named", [("distill.alpha=7", "distill.alpha"),
                                             ("distill.alpah=0.5", "did you mean 'distill.alpha'")])
def test_config_exits_2_with_one_line_on_a_bad_config(capsys, override, named):
    code, out, err = run(capsys, "config", "--config", str(DEMO), override)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and named in err
