"""The layout's import rules: the library imports none of the programs built on it, and the serving
app imports the library only (never a job or the sweep)."""

import ast

from tests.conftest import REPO

PROGRAMS = {"ray_jobs", "tuning", "serving"}


def imported_packages(source: str) -> set[str]:
    """Top-level package of every ``import`` / ``from … import`` in ``source`` (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_scanner_sees_imports_inside_functions():
    source = "import os\ndef f():\n    from tuning.space import search_space\n"
    assert imported_packages(source) == {"os", "tuning"}


def test_the_library_imports_no_job_sweep_or_server():
    for path in sorted((REPO / "raykd").rglob("*.py")):
        wrong = imported_packages(path.read_text()) & PROGRAMS
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def test_the_serving_app_imports_the_library_only():
    for path in sorted((REPO / "serving").rglob("*.py")):
        wrong = imported_packages(path.read_text()) & (PROGRAMS - {"serving"})
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def imported_modules(source: str) -> set[str]:
    """Every module named by a ``from … import`` in ``source``."""
    return {node.module for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}


def test_the_librarys_building_blocks_do_not_call_back_into_the_command_line():
    """data/, models/, training/, cache/, evaluation/ and pipeline/ sit below the commands: they never
    import the entrypoint (``raykd.launch``), the CLI or the config reference."""
    commands = {"raykd.launch", "raykd.cli", "raykd.config_reference"}
    for package in ("data", "models", "training", "cache", "evaluation", "pipeline"):
        for path in sorted((REPO / "raykd" / package).rglob("*.py")):
            wrong = imported_modules(path.read_text()) & commands
            assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"
