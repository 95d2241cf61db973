"""The container image's parts agree: the default config it ships listens where EXPOSE
says, the HEALTHCHECK probes the config the CMD runs, the user is not root, and the
dependencies come from requirements.lock, pinned with hashes, installed with
--require-hashes. (scripts/container-smoke.sh runs the steps; this reads the files.)"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from forwarder import config as config_mod
from forwarder.config.values import parse_server

ROOT = Path(__file__).resolve().parents[2]
IMAGE_CONFIG = "/etc/forwarder/forwarder.yaml"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def last(keyword: str) -> str:
    return [rest for kw, rest in instructions() if kw == keyword][-1]


def shipped_config() -> Path:
    """The repository file the final stage copies to IMAGE_CONFIG."""
    for kw, rest in instructions():
        if kw == "COPY" and rest.endswith(IMAGE_CONFIG) and "--from" not in rest:
            return ROOT / rest.split()[0]
    raise AssertionError(f"nothing is copied to {IMAGE_CONFIG}")


def test_default_config_listens_where_expose_says() -> None:
    cfg = config_mod.load(str(shipped_config()))
    exposed = set(last("EXPOSE").split())
    served = {f"{lst.port}/{proto}" for lst in cfg.listen for proto in lst.protocols}
    assert cfg.metrics.enabled
    served.add(f"{parse_server(cfg.metrics.listen, any_port=True).port}/tcp")
    assert {p if "/" in p else f"{p}/tcp" for p in exposed} == served
    assert {lst.port for lst in cfg.listen} == {53}
    # reachable from outside the container: a wildcard address, not loopback
    assert all(lst.address in ("0.0.0.0", "::") for lst in cfg.listen)


def test_healthcheck_probes_the_config_the_command_runs() -> None:
    command = json.loads(last("CMD"))
    health = json.loads(re.search(r"\bCMD\s+(\[.*\])", last("HEALTHCHECK")).group(1))
    assert command == ["forwarder", "run", "-c", IMAGE_CONFIG]
    assert health == ["forwarder", "health", "-c", IMAGE_CONFIG]


def test_runs_as_a_numeric_non_root_user() -> None:
    args = dict(a.split("=", 1) for kw, a in instructions() if kw == "ARG" and "=" in a)
    user = last("USER")
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user).split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, hashes)}."""
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --")
        name, _, version = spec.split(";")[0].strip().partition("==")
        out[name.lower()] = (version, [o for o in options if o.startswith("hash=sha256:")])
    return out


def test_lock_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    lock = locked()
    for req in wanted:
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{req.name} is not in requirements.lock"
        version = lock[name][0]
        assert version and req.specifier.contains(version), f"{name}=={version} vs {req}"
    assert all(hashes for _, hashes in lock.values()), "a pin without a hash"


def test_image_installs_the_lock_with_hashes_only() -> None:
    runs = [rest for kw, rest in instructions() if kw == "RUN" and "pip install" in rest]
    assert any("--require-hashes" in r and "-r /src/requirements.lock" in r for r in runs)
    # the project itself adds nothing unlocked: no dependencies, no isolated build env
    project = [r for r in runs if r.rstrip().endswith(" /src")]
    assert project and all("--no-deps" in r and "--no-build-isolation" in r for r in project)
