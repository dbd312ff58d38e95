"""The agents' environment: the allowlist, extra variables and their validation."""

from __future__ import annotations

import pytest

from tmops_core.agents.env import BASE_ENV_ALLOWLIST, BASE_ENV_PREFIXES, build_env, provider_allow
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import ProviderError, ProviderSpec


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
    claude = create_plugin_manager().providers()["claude-code"].spec
    env = build_env(
        {"ANTHROPIC_BASE_URL": "http://gateway", "EXTRA": "1"},
        allow=provider_allow(claude, ["MY_PROXY", "NODE_*"]),
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
    assert {"HOME", "PATH", "IS_SANDBOX", "NO_COLOR"} <= set(BASE_ENV_ALLOWLIST)
    assert set(BASE_ENV_PREFIXES) == {"LC_"}


def test_an_agents_variables_come_from_its_provider_not_the_core() -> None:
    # The core's allowlist names no agent: another provider's agent gets no Claude settings.
    environ = {"PATH": "/usr/bin", "ANTHROPIC_API_KEY": "k", "CLAUDE_CONFIG_DIR": "/cfg",
               "OTHER_AGENT_HOME": "/o", "OTHER_KEY": "x"}  # fmt: skip
    assert build_env({}, environ=environ) == {"PATH": "/usr/bin"}
    other = ProviderSpec(name="other", factory=lambda _: None,  # type: ignore[arg-type,return-value]
                         env_names=["OTHER_KEY"], env_prefixes=["OTHER_AGENT_"])  # fmt: skip
    assert build_env({}, allow=provider_allow(other), environ=environ) == {
        "PATH": "/usr/bin", "OTHER_AGENT_HOME": "/o", "OTHER_KEY": "x"}  # fmt: skip
    assert provider_allow(other, ["MINE"]) == ("MINE", "OTHER_KEY", "OTHER_AGENT_*")
    assert provider_allow(None, ["MINE"]) == ("MINE",)


@pytest.mark.parametrize("bad", ["", "A-B", "A B", "A*", "1A"])
def test_a_provider_spec_refuses_bad_variable_names(bad: str) -> None:
    with pytest.raises(ValueError, match="environment variable names"):
        ProviderSpec(name="p", factory=lambda _: None, env_prefixes=[bad])  # type: ignore[arg-type,return-value]


def test_build_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("LC_MESSAGES", "C")
    env = build_env({})
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["LC_MESSAGES"] == "C"


@pytest.mark.parametrize("extra", [{"A=B": "1"}, {"": "1"}, {"A\0": "1"}, {"A": "x\0y"}, {"A": 1}])
def test_build_env_rejects_bad_variables(extra: dict[str, str]) -> None:
    with pytest.raises(ProviderError, match="environment variable"):
        build_env(extra, environ={})
