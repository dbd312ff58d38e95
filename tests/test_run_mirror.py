"""A run's folder mirrored to the shared remote and restored in another clone: real git
repositories (a bare remote, two clones), the engine's plumbing, and mirrors that lie."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tmops_core.orchestration.run_mirror import (
    LOG_CAP,
    MANIFEST,
    RunMirror,
    folder_ref,
    run_mirror,
)
from tmops_core.workspace.layout import Layout, atomic_write, open_dir
from tmops_hookspecs import TmopsError

FEATURE, RUN, BRANCH = "demo-feature", "initial", "tmops/demo-feature"


def git(cwd: Path, *args: str, input_text: str | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          input=input_text)  # fmt: skip
    return done.stdout.strip()


def _clone(remote: Path, path: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(remote), str(path)], check=True)
    git(path, "config", "user.name", "test")
    git(path, "config", "user.email", "test@example.invalid")
    return path


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    seed = _clone(bare, tmp_path / "seed")
    (seed / "README.md").write_text("hello\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "--quiet", "-m", "first")
    git(seed, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return bare


def _engine_a(remote: Path, base: Path) -> tuple[Layout, Path, dict[str, bytes]]:
    """Clone A with a feature worktree (one commit on its branch) and a run folder."""
    root = _clone(remote, base / "a")
    layout = Layout(root.resolve())
    worktree = layout.tmops_dir / "worktrees" / FEATURE
    os.close(open_dir(worktree.parent, create=True, root=layout.project_root))
    git(root, "worktree", "add", "--quiet", "-b", BRANCH, str(worktree))
    (worktree / "test_x.py").write_text("def test_x(): assert False\n")
    git(worktree, "add", "test_x.py")
    git(worktree, "commit", "--quiet", "-m", "tester")
    files = {
        "TASK_SPEC.md": b"# the task\n",
        "checkpoints/00-trigger.md": b"go\n",
        "checkpoints/01-tester-complete.md": b"red\n",
        "logs/tester.log": b"x" * (LOG_CAP + 10) + b"the end\n",
        "SUMMARY.md": b"summary\n",
    }
    folder = layout.run_dir(FEATURE, RUN)
    for name, data in files.items():
        os.close(open_dir((folder / name).parent, create=True, root=layout.project_root))
        atomic_write(folder / name, data, root=layout.project_root)
    os.symlink("/etc/passwd", folder / "checkpoints" / "link.md")  # never travels
    return layout, worktree, files


def _modes(folder: Path) -> set[tuple[str, int]]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            info = os.lstat(Path(dirpath) / name)
            found.add(("dir" if stat.S_ISDIR(info.st_mode) else "file", stat.S_IMODE(info.st_mode)))
    return found


def test_a_run_folder_and_its_worktree_come_back_in_another_clone(
    tmp_path: Path, remote: Path
) -> None:
    layout_a, worktree_a, files = _engine_a(remote, tmp_path)
    mirror_a = RunMirror(layout_a, "origin", FEATURE, RUN)
    user_index = (layout_a.project_root / ".git" / "index").read_bytes()
    mirror_a.publish(worktree_a, BRANCH)
    # the user's index and checkout never moved
    assert (layout_a.project_root / ".git" / "index").read_bytes() == user_index
    assert git(layout_a.project_root, "status", "--porcelain").strip() in ("", "?? .tmops/")
    assert git(remote, "rev-parse", f"refs/heads/{BRANCH}") == git(worktree_a, "rev-parse", "HEAD")
    tree = git(remote, "ls-tree", "-r", "--name-only", folder_ref(FEATURE, RUN)).split()
    assert "checkpoints/link.md" not in tree
    assert MANIFEST in tree

    layout_b = Layout(_clone(remote, tmp_path / "b").resolve())
    mirror_b = RunMirror(layout_b, "origin", FEATURE, RUN)
    here = mirror_b.restore(worktree_a, BRANCH)  # the store's path: clone A's
    assert here == layout_b.tmops_dir / "worktrees" / FEATURE
    assert git(here, "rev-parse", "HEAD") == git(worktree_a, "rev-parse", "HEAD")
    assert (here / "test_x.py").exists()
    folder = layout_b.run_dir(FEATURE, RUN)
    for name, data in files.items():
        restored = (folder / name).read_bytes()
        if name == "logs/tester.log":  # its end travels, said to be cut
            assert restored.endswith(data[-LOG_CAP:])
            assert restored.startswith(b"[tmops:")
        else:
            assert restored == data
    assert not os.path.lexists(folder / "checkpoints" / "link.md")
    assert not (folder / MANIFEST).exists()
    assert _modes(folder) <= {("dir", 0o700), ("file", 0o600)}
    assert os.readlink(layout_b.current_link(FEATURE)) == f"runs/{RUN}"
    # both there now: nothing is fetched again, and a second mirror builds on the first
    first = git(layout_b.project_root, "rev-parse", folder_ref(FEATURE, RUN))
    assert mirror_b.restore(here, BRANCH) == here
    mirror_b.save(here, BRANCH)
    assert git(remote, "rev-parse", f"{folder_ref(FEATURE, RUN)}^") == first


def test_a_run_without_a_mirror_is_a_clear_error(tmp_path: Path, remote: Path) -> None:
    layout = Layout(_clone(remote, tmp_path / "b").resolve())
    with pytest.raises(TmopsError, match="is not on this machine and cannot be fetched"):
        RunMirror(layout, "origin", FEATURE, RUN).restore(tmp_path / "gone", BRANCH)
    assert not os.path.lexists(layout.run_dir(FEATURE, RUN))


def _hostile_mirror(remote: Path, base: Path, entry: str, manifest: str = '{"version": 1}') -> None:
    """Push to the remote's folder ref a tree with ``entry`` (an ``ls-tree`` line's tail)
    besides ``manifest``: a symlink, or a path climbing out with ``..``."""
    repo = _clone(remote, base / "evil")
    manifest = git(repo, "hash-object", "-w", "--stdin", input_text=manifest)
    target = git(repo, "hash-object", "-w", "--stdin", input_text="/etc/passwd")
    inner = git(repo, "mktree", input_text=f"100644 blob {target}\tpasswd\n")
    lines = f"100644 blob {manifest}\t{MANIFEST}\n" + entry.format(blob=target, tree=inner)
    tree = git(repo, "mktree", input_text=lines)
    commit = git(repo, "commit-tree", tree, "-m", "evil")
    ref = folder_ref(FEATURE, RUN)
    git(repo, "push", "--quiet", "origin", f"+{commit}:{ref}")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("120000 blob {blob}\tcheckpoints-link\n", "is not a plain file"),
        ("040000 tree {tree}\t..\n", "leaves the run's folder"),
    ],
    ids=["symlink", "dot-dot"],
)
def test_a_hostile_mirror_is_refused_and_nothing_is_restored(
    tmp_path: Path, remote: Path, entry: str, why: str
) -> None:
    _hostile_mirror(remote, tmp_path, entry)
    layout = Layout(_clone(remote, tmp_path / "b").resolve())
    with pytest.raises(TmopsError, match=why) as caught:
        RunMirror(layout, "origin", FEATURE, RUN).restore(tmp_path / "gone", BRANCH)
    assert "nothing of it was restored" in str(caught.value)
    assert not os.path.lexists(layout.run_dir(FEATURE, RUN))
    assert not os.path.lexists(layout.tmops_dir / "worktrees")


def test_a_mirror_naming_a_worktree_elsewhere_is_refused(tmp_path: Path, remote: Path) -> None:
    elsewhere = tmp_path / "anywhere" / "wt"
    _hostile_mirror(remote, tmp_path, "", manifest=f'{{"version": 1, "worktree": "{elsewhere}"}}')
    layout = Layout(_clone(remote, tmp_path / "b").resolve())
    with pytest.raises(TmopsError, match="restore the worktree by hand"):
        RunMirror(layout, "origin", FEATURE, RUN).restore(tmp_path / "gone", BRANCH)
    assert not os.path.lexists(layout.run_dir(FEATURE, RUN))
    assert not os.path.lexists(elsewhere.parent)


def test_a_missing_folder_never_replaces_the_remote_mirror(tmp_path: Path, remote: Path) -> None:
    layout_a, worktree_a, _ = _engine_a(remote, tmp_path)
    RunMirror(layout_a, "origin", FEATURE, RUN).save(worktree_a, BRANCH)
    mirrored = git(remote, "rev-parse", folder_ref(FEATURE, RUN))
    layout_b = Layout(_clone(remote, tmp_path / "b").resolve())
    mirror_b = RunMirror(layout_b, "origin", FEATURE, RUN)
    with pytest.raises(TmopsError, match="nothing to mirror"):
        mirror_b.save(tmp_path / "gone", BRANCH)
    mirror_b.publish(tmp_path / "gone", BRANCH)  # a run that could not be restored here
    assert git(remote, "rev-parse", folder_ref(FEATURE, RUN)) == mirrored


def test_a_local_executor_mirrors_nothing(tmp_path: Path) -> None:
    from tmops_core.config import Config

    config = Config()
    assert config.executor.name == "local"
    assert run_mirror(config, Layout(tmp_path), FEATURE, RUN) is None


def test_a_branch_this_clone_has_further_on_is_kept(tmp_path: Path, remote: Path) -> None:
    layout_a, worktree_a, _ = _engine_a(remote, tmp_path)
    RunMirror(layout_a, "origin", FEATURE, RUN).publish(worktree_a, BRANCH)
    root_b = _clone(remote, tmp_path / "b")
    git(root_b, "fetch", "--quiet", "origin", f"{BRANCH}:{BRANCH}")
    further = git(root_b, "commit-tree", f"{BRANCH}^{{tree}}", "-p", BRANCH, "-m", "later")
    git(root_b, "update-ref", f"refs/heads/{BRANCH}", further)
    layout_b = Layout(root_b.resolve())
    here = RunMirror(layout_b, "origin", FEATURE, RUN).restore(worktree_a, BRANCH)
    assert git(here, "rev-parse", "HEAD") == further
    assert git(root_b, "for-each-ref", f"refs/tmops/{FEATURE}/{RUN}/restoring") == ""
