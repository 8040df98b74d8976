"""Broken configs, generated: every one either loads or is a ConfigError whose one line names what is
wrong (the key, or the file), never another exception (a traceback for the user)."""

import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raykd.config import ConfigError, load_config
from tests.conftest import DEMO

SECTIONS = yaml.safe_load(DEMO.read_text())
KEYS = sorted((section, key) for section, body in SECTIONS.items() if isinstance(body, dict) for key in body)
ANY_YAML = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
              st.text(max_size=20), st.sampled_from([math.inf, -math.inf, "", "1e400", "0x10", "~"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@st.composite
def mutated(draw) -> tuple[str, str]:
    """The demo config with one key's value replaced, deleted, or a stray key added; and that key."""
    data = yaml.safe_load(DEMO.read_text())
    section, key = draw(st.sampled_from(KEYS))
    action = draw(st.sampled_from(["replace", "replace", "delete", "stray", "section"]))
    if action == "replace":
        data[section][key] = draw(ANY_YAML)
    elif action == "delete":
        del data[section][key]
    elif action == "stray":
        key = key + draw(st.text("abc_", min_size=1, max_size=4))
        data[section][key] = draw(ANY_YAML)
    else:
        data[section], key = draw(ANY_YAML.filter(lambda v: not isinstance(v, dict))), section
    return yaml.safe_dump(data), key


RAW = st.one_of(st.text(max_size=200), st.sampled_from([
    "finetune: {workers: [1, 2}", "finetune:\n\tworkers: 1", "finetune:\n  workers: 1\n  workers: 2",
    "a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\nfinetune: *b", "!!python/object:os.system {}", "- 1\n- 2",
    "finetune: !!binary aGVsbG8=", "\ufeff\x00\x01",
]))


def load_text(text: str) -> ConfigError | None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "config.yaml")
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as e:
            return e
    return None


@settings(max_examples=400, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=mutated())
def test_a_config_with_one_bad_key_loads_or_names_that_key(case):
    text, key = case
    error = load_text(text)
    if error is not None:
        line = str(error)
        assert "\n" not in line.strip() and key in line, (key, line)


@settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=RAW)
def test_a_broken_yaml_file_loads_or_is_one_line_naming_the_file(text):
    error = load_text(text)
    if error is not None:
        assert "\n" not in str(error).strip() and ("config.yaml" in str(error) or "'" in str(error)), str(error)
