"""The shared stage entrypoint: the stale-bootstrap-file hint."""

from __future__ import annotations

import socket

from raykd.launch import warn_if_stale_bootstrap_file


def test_a_bootstrap_file_naming_a_dead_cluster_is_reported(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stale = tmp_path / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{port}")
    warn_if_stale_bootstrap_file(str(stale))
    assert str(stale) in capsys.readouterr().err


def test_a_live_cluster_or_no_file_is_silent(tmp_path, capsys):
    warn_if_stale_bootstrap_file(str(tmp_path / "missing"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        live = tmp_path / "ray_current_cluster"
        live.write_text(f"127.0.0.1:{listener.getsockname()[1]}")
        warn_if_stale_bootstrap_file(str(live))
    assert capsys.readouterr().err == ""
