"""``tmops doctor``: what tmops needs, checked one by one, each with what was found and the fix.

Checks: git (present, at least :data:`GIT_MINIMUM`); each enabled provider (its section valid,
permission modes included; its program found on the agents' PATH; its version, when the
provider says how to ask); the modes of ``.tmops`` (folders 0700, files 0600, owned by the
user, no links but ``<feature>/current``); free disk on the project's filesystem; the store
(``PRAGMA integrity_check``, its schema at this tmops' head); stale engines (a lease or a
running run whose engine is dead); worktrees git has lost or the store names and git does not
have; and, when the config names an executor plugin, that plugin's own check (its server, its
workers: ``ExecutorSpec.check``, every call bounded by a timeout). Each is ``ok``, ``warn`` or
``fail``; only a ``fail`` makes the doctor fail.

It changes nothing: the store is read through a read-only connection, and the store's engine
records only once that says the store is sound and at this tmops' schema.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from tmops_core.agents.env import build_env, provider_allow
from tmops_core.agents.probe import program_version
from tmops_core.config import Config, provider_settings
from tmops_core.git import Git, find_git
from tmops_core.lifecycle import RunState
from tmops_core.orchestration.executors import executor_settings, executor_spec
from tmops_core.orchestration.liveness import engine_alive, run_engine_alive
from tmops_core.orchestration.providers import default_provider, workflow_providers
from tmops_core.orchestration.remote import RemoteAttempts
from tmops_core.plugins import Plugins
from tmops_core.secrets import redact_text
from tmops_core.service.preflight import provider_program, resolve_program
from tmops_core.store import (
    STORE_NAME,
    Store,
    is_shared,
    open_existing_store,
    sqlite_path,
    store_errors,
)
from tmops_core.store.maintenance import head_version, inspect_database
from tmops_core.workspace.layout import DIR_MODE, FILE_MODE, Layout, lstat_checked, open_dir
from tmops_hookspecs import TmopsError

__all__ = ["DISK_WARN_BYTES", "GIT_MINIMUM", "Check", "run_doctor", "summary"]

#: git 2.36: ``worktree list -z``; 2.24: ``--end-of-options``
GIT_MINIMUM = (2, 36)
#: under this much free space on the project's filesystem, a warning
DISK_WARN_BYTES = 1 << 30
#: how many offending paths a check names
_SHOWN = 5
OK, WARN, FAIL = "ok", "warn", "fail"


@attrs.frozen
class Check:
    name: str
    status: str
    found: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


def run_doctor(layout: Layout, config: Config, plugins: Plugins) -> list[Check]:
    """Every check, in order; a check that raises is reported failed, not the doctor."""
    found: list[Check] = []

    def store_readable() -> bool:
        # the store's records are read only when the store itself checked out ok
        return any(c.name == "store" and c.status == OK for c in found)

    checks: list[tuple[str, Callable[[], list[Check]]]] = [
        ("git", lambda: [_git(layout.project_root)]),
        ("providers", lambda: _providers(layout, config, plugins)),
        ("permissions", lambda: [_modes(layout)]),
        ("disk", lambda: [_disk(layout)]),
        ("store", lambda: _store(layout, config)),
        ("worktrees", lambda: [_worktrees(layout, config, read_store=store_readable())]),
        ("executor", lambda: _executor(layout, config, plugins)),
    ]
    for name, check in checks:
        try:
            found.extend(check())
        except TmopsError as exc:
            found.append(Check(name, FAIL, f"the check could not run: {exc.message}",
                               exc.hint or ""))  # fmt: skip
        except Exception as exc:
            # only the disk's and the store's (psycopg's too, once the store check imported it)
            if not isinstance(exc, (OSError, *store_errors())):
                raise
            found.append(Check(name, FAIL, f"the check could not run: {redact_text(str(exc))}"))
    return found


def _git(root: Path) -> Check:
    try:
        git = find_git()
    except TmopsError as exc:
        return Check("git", FAIL, exc.message, exc.hint or "")
    version = Git(root, executable=git).version()
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    wanted = ".".join(map(str, GIT_MINIMUM))
    if numbers < GIT_MINIMUM:
        return Check("git", FAIL, f"git {version} at {git}", f"upgrade git to {wanted} or newer")
    return Check("git", OK, f"git {version} at {git} (tmops needs {wanted} or newer)")


def _workflow_providers(config: Config, plugins: Plugins) -> dict[str, str]:
    """The providers the workflow's phases run with, each with the first phase it plays (a
    failed check of one fails the doctor)."""
    try:
        chosen = workflow_providers(config, plugins)
    except TmopsError:  # no default provider: reported by the providers check
        chosen = dict(config.features.phase_providers)
    first: dict[str, str] = {}
    for phase, name in chosen.items():
        first.setdefault(name, phase)
    return first


def _enabled_providers(config: Config, plugins: Plugins) -> list[str]:
    installed = plugins.providers()
    names = {*_workflow_providers(config, plugins), *config.providers}
    return sorted(
        name.replace("_", "-") if name.replace("_", "-") in installed else name
        for name in names
        if provider_settings(config, name).get("enabled", True)
    )


def _providers(layout: Layout, config: Config, plugins: Plugins) -> list[Check]:
    installed = plugins.providers()
    checks = []
    try:
        default_provider(config, plugins)
    except TmopsError as exc:
        checks.append(Check("default provider", FAIL, exc.message, exc.hint or ""))
    used = _workflow_providers(config, plugins)
    for name in _enabled_providers(config, plugins):
        label = f"provider {name}"
        if name not in installed:
            checks.append(Check(
                label, FAIL if name in used else WARN,
                f"no installed plugin provides it (installed: {', '.join(sorted(installed))})",
                "install its plugin, or change features.default_provider / "
                "features.phase_providers / remove its section",
            ))  # fmt: skip
            continue
        try:
            program, path = provider_program(
                config, plugins, layout, name, feature="doctor", run="initial",
                worktree=layout.project_root, phase=used.get(name),
            )  # fmt: skip
        except TmopsError as exc:
            fix = f"fix providers.{name} (`tmops config check` lists all)"
            checks.append(Check(label, FAIL, f"its settings are refused: {exc.message}", fix))
            continue
        checks.append(_provider_version(label, name, program, path, config, plugins))
    return checks


def _provider_version(
    label: str, name: str, program: str, path: str, config: Config, plugins: Plugins
) -> Check:
    resolved = resolve_program(program, path)
    if resolved is None:
        return Check(
            label, FAIL, f"its program {program!r} is not on the agents' PATH",
            f"install it, or set providers.{name}.command to its path",
        )  # fmt: skip
    spec = plugins.providers()[name].spec
    version_args = spec.version_args
    if not version_args:
        return Check(label, OK, f"{resolved} (the provider names no way to ask its version)")
    settings = provider_settings(config, name)
    allow = provider_allow(spec, config.features.env_allowlist)
    env = build_env(dict(settings.get("env", {})), allow=allow)
    version, why = program_version([resolved, *version_args], env)
    if version is None:
        return Check(
            label, WARN, f"{resolved}: asking its version failed: {why}",
            f"run `{resolved} {' '.join(version_args)}` to see why",
        )  # fmt: skip
    return Check(label, OK, f"{resolved}: {version}")


def _modes(layout: Layout) -> Check:
    """Folders 0700 and files 0600 (no group or other bits), owned by this user, no links."""
    if lstat_checked(layout.tmops_dir) is None:
        return Check("permissions", OK, f"no {layout.tmops_dir} yet")
    uid = os.getuid()
    loose: list[str] = []
    foreign: list[str] = []
    links: list[str] = []
    pending = [layout.tmops_dir]
    while pending:
        folder = pending.pop()
        fd = open_dir(folder, root=layout.project_root)
        try:
            # stat each entry while its folder's descriptor is open (scandir's entries need it)
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in os.scandir(fd)]
            info = os.fstat(fd)
        finally:
            os.close(fd)
        if folder != layout.tmops_dir and any(name == ".git" for name, _ in entries):
            continue  # a worktree: git's folder, git's files, git's modes
        _judge(folder, info, DIR_MODE, uid, loose, foreign)
        for name, entry in entries:
            path = Path(folder, name)
            if stat.S_ISLNK(entry.st_mode):
                if name != "current":
                    links.append(str(path))
            elif stat.S_ISDIR(entry.st_mode):
                pending.append(path)
            else:
                _judge(path, entry, FILE_MODE, uid, loose, foreign)
    return _modes_check(layout, loose, foreign, links)


def _judge(
    path: Path, info: os.stat_result, mode: int, uid: int, loose: list[str], foreign: list[str]
) -> None:
    if stat.S_IMODE(info.st_mode) & ~mode & 0o077:
        loose.append(f"{path} ({stat.S_IMODE(info.st_mode):o})")
    if info.st_uid != uid:
        foreign.append(f"{path} (uid {info.st_uid})")


def _modes_check(layout: Layout, loose: list[str], foreign: list[str], links: list[str]) -> Check:
    where = layout.tmops_dir
    if foreign:
        return Check("permissions", FAIL, _some("owned by another user", foreign),
                     f"`sudo chown -R $(id -un) {where}`")  # fmt: skip
    if loose:
        return Check("permissions", FAIL, _some("open to other users", loose),
                     f"`chmod -R go-rwx {where}` (folders 0700, files 0600)")  # fmt: skip
    if links:
        return Check("permissions", WARN, _some("links tmops never follows", links),
                     "remove them (`rm LINK`)")  # fmt: skip
    return Check("permissions", OK, f"{where}: folders 0700, files 0600, all yours")


def _some(what: str, paths: list[str]) -> str:
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return f"{len(paths)} {what}: {', '.join(paths[:_SHOWN])}{more}"


def _disk(layout: Layout) -> Check:
    free = shutil.disk_usage(layout.project_root).free
    found = f"{free / (1 << 30):.1f} GiB free on the filesystem of {layout.project_root}"
    if free < DISK_WARN_BYTES:
        return Check("disk", WARN, found, "free some space: agents, logs and git need room")
    return Check("disk", OK, found)


def _store(layout: Layout, config: Config) -> list[Check]:
    if is_shared(config.store.url):
        return _shared_store(layout, config)
    path = sqlite_path(layout.tmops_dir / STORE_NAME, config.store.url)
    if lstat_checked(path) is None:
        return [Check("store", OK, f"no store at {path} yet")]
    report = inspect_database(path)
    head = head_version()
    restore = "restore the last backup (`tmops restore ARCHIVE --force`)"
    if not report.sound:
        return [Check("store", FAIL, f"{path} fails the integrity check: "
                      f"{'; '.join(report.integrity[:_SHOWN])}", restore)]  # fmt: skip
    if report.version > head:
        return [Check("store", FAIL, f"schema {report.version}, newer than this tmops ({head})",
                      "upgrade tmops")]  # fmt: skip
    workspace = config.server.workspace_id
    if report.workspace not in (None, workspace):
        return [Check("store", FAIL, f"{path} was made for workspace {report.workspace!r}, and "
                      f"this config's server.workspace_id is {workspace!r}",
                      f"set server.workspace_id back to {report.workspace!r}, or point "
                      "store.url at another file")]  # fmt: skip
    if report.version < head:
        fix = "any tmops command that opens the store migrates it"
        return [
            Check("store", WARN, f"schema {report.version}, this tmops migrates to {head}", fix)
        ]
    return [
        Check("store", OK, f"{path}: integrity ok, schema {head} (head)"),
        _engines(layout, config),
    ]


def _shared_store(layout: Layout, config: Config) -> list[Check]:
    """A PostgreSQL store: reachable and migrated (opening it migrates); its pages are the
    server's to check (pg_amcheck), not tmops'."""
    store = _open(layout, config)
    assert store is not None  # noqa: S101 - a PostgreSQL store is always there
    try:
        version = store.schema_version
    finally:
        store.close()
    where = f"PostgreSQL {redact_text(config.store.url or '')}"
    return [
        Check("store", OK, f"{where}: reachable, schema {version} (head {head_version()}); "
              "its integrity is the server's (pg_amcheck)"),
        _engines(layout, config),
    ]  # fmt: skip


def _open(layout: Layout, config: Config) -> Store | None:
    return open_existing_store(
        layout.tmops_dir / STORE_NAME, url=config.store.url, workspace=config.server.workspace_id
    )


def _engines(layout: Layout, config: Config) -> Check:
    store = _open(layout, config)
    assert store is not None  # noqa: S101 - checked just before
    try:
        stale = []
        serving = store.serving_engine()
        if serving is not None and not engine_alive(serving):
            stale.append(f"engine pid {serving.pid} holds the lease but is dead")
        for feature in store.features():
            for run in store.runs(feature.name):
                if run.status == RunState.RUNNING and not run_engine_alive(store, run):
                    stale.append(f"{run.feature}/{run.run} is running for a dead engine")
    finally:
        store.close()
    if stale:
        return Check(
            "engines", WARN, "; ".join(stale),
            "`tmops status FEATURE` (or `tmops resume FEATURE`) starts an engine that takes "
            "the runs over; nothing needs removing by hand",
        )  # fmt: skip
    return Check("engines", OK, "no stale engine")


def _worktrees(layout: Layout, config: Config, *, read_store: bool) -> Check:
    git = Git(layout.project_root)
    git.toplevel()  # outside a repository: says so, and what to do
    lost = git.stale_worktrees()
    store = _open(layout, config) if read_store else None
    missing = []
    if store is not None:
        try:
            missing = [
                f"{f.name} ({f.worktree})"
                for f in store.features()
                if not Path(f.worktree).is_dir()
            ]
        finally:
            store.close()
    if lost:
        return Check("worktrees", WARN, _some("worktrees git lost", lost), "`git worktree prune`")
    if missing:
        return Check(
            "worktrees", WARN, _some("features whose worktree is missing", missing),
            "`git worktree add PATH BRANCH` (or `tmops restore` from a backup)",
        )  # fmt: skip
    return Check("worktrees", OK, "every worktree is where git and the store say")


def _executor(layout: Layout, config: Config, plugins: Plugins) -> list[Check]:
    """The executor plugin's own check; nothing for the built-in one (the engine's own
    process tree needs nothing the other checks do not cover)."""
    spec = executor_spec(config, plugins)  # a name nobody installed: the loop reports it
    if spec is None:
        return []
    label = f"executor {spec.name}"
    if spec.check is None:
        return [Check(label, OK, "the executor names no check of its own")]
    host = RemoteAttempts(config, plugins, layout)
    try:
        found = spec.check(executor_settings(config), host)
    except TmopsError:
        raise  # its settings refused: the loop reports the message and its hint
    except Exception as exc:
        # a plugin's defect fails its check, not the doctor
        raised = f"its check raised {type(exc).__name__}: {redact_text(str(exc))}"
        return [Check(label, FAIL, raised, "report it to the executor plugin's authors")]
    return [Check(f"{label} {c.name}", c.status, c.found, c.fix) for c in found]


def summary(checks: list[Check]) -> dict[str, Any]:
    """The doctor's answer: every check, and whether none failed."""
    return {"ok": all(c.status != FAIL for c in checks), "checks": [c.to_dict() for c in checks]}
