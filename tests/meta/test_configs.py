"""Every configuration file shipped under config/ passes `check-config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder import cli

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_configs() -> None:
    assert any(f.name == "forwarder.yaml" for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_file_is_valid(path: Path, capsys: pytest.CaptureFixture[str],
                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the `system` group reads resolv.conf: give it one so the check does not depend on the host
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    monkeypatch.setenv("FORWARDER_RESOLV_CONF", str(resolv))
    # checked where the forwarder does not run: the examples' `user:` need not exist here
    assert cli.check_config(str(path), target=False) == 0, capsys.readouterr().err
