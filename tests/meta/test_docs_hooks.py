"""docs/hooks.md stays true: its configurations load, its hook code loads as a hook, and its
worked example works as the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forwarder import cli
from forwarder import config as config_mod
from forwarder.hooks import runner as hookrunner

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
TEXT = DOC.read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", TEXT, re.S)
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


@pytest.fixture(autouse=True)
def resolv_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the `system` group reads resolv.conf: give it one so the check does not depend on the host
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    monkeypatch.setenv("FORWARDER_RESOLV_CONF", str(resolv))


def test_the_page_has_examples() -> None:
    assert len(YAML_BLOCKS) >= 2 and len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.splitlines()[0])
def test_yaml_blocks_are_valid_configurations(block: str) -> None:
    assert config_mod.load_text(block).hooks


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: str(len(b)))
def test_python_blocks_load_as_hooks(block: str, tmp_path: Path) -> None:
    hook = tmp_path / "doc_hook.py"
    hook.write_text(block)
    cfg = config_mod.load_text(
        "zones: [{match: ., upstream: system}]\n"
        f"hooks: [{{path: {hook}, options: {{networks: [10.20.0.0/16], group: x}}}}]\n")
    (loaded,) = hookrunner.load_hooks(cfg)
    assert loaded.on_query is not None


def test_worked_example_checks_and_fails_as_documented(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hooks").mkdir()
    config_path = tmp_path / "forwarder.yaml"
    config_path.write_text(YAML_BLOCKS[-1])
    hook = tmp_path / "hooks" / "lab_tenant.py"
    hook.write_text(PYTHON_BLOCKS[-1])
    assert cli.check_config(str(config_path)) == cli.EXIT_OK
    ok_line = capsys.readouterr().out.strip()
    assert ok_line.replace(str(config_path), "/etc/forwarder/forwarder.yaml") in TEXT
    hook.write_text(PYTHON_BLOCKS[-1].replace('options["networks"]', 'options["network"]'))
    assert cli.check_config(str(config_path)) == cli.EXIT_CONFIG
    error = capsys.readouterr().err.splitlines()[0]
    assert error.replace(str(tmp_path), "/etc/forwarder") in TEXT
