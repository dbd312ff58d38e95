"""The agents' environment: the allowlist, extra variables and their validation."""

from __future__ import annotations

import pytest

from tmops_core.agents.env import BASE_ENV_ALLOWLIST, BASE_ENV_PREFIXES, build_env
from tmops_hookspecs import ProviderError


def test_build_env_keeps_only_the_allowlist() -> None:
    environ = {
        "HOME": "/home/me",
        "PATH": "/usr/bin",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "GITHUB_TOKEN": "ghp_secret",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CONFIG_DIR": "/cfg",
        "IS_SANDBOX": "1",
        "LC_MESSAGES": "C",
        "MY_PROXY": "http://proxy",
        "NODE_OPTIONS": "--x",
        "NODE_EXTRA_CA_CERTS": "/ca.pem",
        "SSH_AUTH_SOCK": "/tmp/agent",
    }
    env = build_env(
        {"ANTHROPIC_BASE_URL": "http://gateway", "EXTRA": "1"},
        allow=["MY_PROXY", "NODE_*"],
        environ=environ,
    )
    assert env == {
        "HOME": "/home/me",
        "PATH": "/usr/bin",
        "ANTHROPIC_BASE_URL": "http://gateway",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CONFIG_DIR": "/cfg",
        "IS_SANDBOX": "1",
        "LC_MESSAGES": "C",
        "MY_PROXY": "http://proxy",
        "NODE_OPTIONS": "--x",
        "NODE_EXTRA_CA_CERTS": "/ca.pem",
        "EXTRA": "1",
    }
    assert {"HOME", "PATH", "CLAUDE_CONFIG_DIR", "IS_SANDBOX", "NO_COLOR"} <= set(
        BASE_ENV_ALLOWLIST
    )
    assert set(BASE_ENV_PREFIXES) == {"ANTHROPIC_", "CLAUDE_CODE_", "LC_"}


def test_build_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "dummy")
    env = build_env({})
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["ANTHROPIC_API_KEY"] == "dummy"


@pytest.mark.parametrize("extra", [{"A=B": "1"}, {"": "1"}, {"A\0": "1"}, {"A": "x\0y"}, {"A": 1}])
def test_build_env_rejects_bad_variables(extra: dict[str, str]) -> None:
    with pytest.raises(ProviderError, match="environment variable"):
        build_env(extra, environ={})
