"""The student built from blocks of the teacher, from the teacher directory the run resolved."""

import pytest

from raykd.builtin.presets import builtin_model_dir
from raykd.config import ConfigError, load_config
from raykd.models.student import build_student, check_student
from tests.conftest import DEMO


def test_a_teacher_layers_student_is_built_from_the_teacher_it_is_handed(tmp_path):
    cfg = load_config(DEMO, [f"run_dir={tmp_path}", "models.student=teacher-layers:0,1"])
    teacher = str(builtin_model_dir("teacher"))
    student = build_student(cfg, teacher=teacher, weights=False)
    assert student.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="teacher-layers:0,1 is built from the teacher"):
        build_student(cfg, weights=False)


def test_a_teacher_layers_student_names_the_missing_teacher_before_any_training(tmp_path):
    cfg = load_config(DEMO, [f"run_dir={tmp_path}", "models.student=teacher-layers:0"])
    with pytest.raises(ConfigError, match="no teacher model here; run `raykd finetune` first"):
        check_student(cfg)
    ok = load_config(DEMO, [f"run_dir={tmp_path}", "models.student=teacher-layers:0",
                            f"cache.teacher={builtin_model_dir('teacher')}"])
    check_student(ok)
