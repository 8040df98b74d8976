"""A stage pointed at a token-auth cluster without the right client settings: one line, at once."""

import time

import pytest

from tests.conftest import DEMO, raykd

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("client_env, says", [
    ({}, "requires token authentication"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-cluster-token"}, "refused this client's token"),
])
def test_a_stage_refused_by_a_token_auth_cluster_says_what_to_set_in_one_line(ray_head, monkeypatch, tmp_path,
                                                                           client_env, says):
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    for key, value in client_env.items():
        monkeypatch.setenv(key, value)
    started = time.time()
    proc = raykd("finetune", "--config", str(DEMO), f"run_dir={tmp_path}", check=False, timeout=120)
    seconds = time.time() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0] == (f"raykd: error: the Ray cluster at {ray_head.address} {says}: set RAY_AUTH_MODE=token and "
                        "give the cluster's token in RAY_AUTH_TOKEN, in the file RAY_AUTH_TOKEN_PATH names, or in "
                        "~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
    assert seconds < 30 and not (tmp_path / "teacher").exists()
    print(f"refused in {seconds:.1f} s")
