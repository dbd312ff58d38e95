# The tests of the rules in tmops.yml (semgrep --test .semgrep/): each `ruleid:` line must be
# found, each `ok:` line must not. Not imported, not linted (ruff excludes .semgrep).
import asyncio
import os
import subprocess

import yaml

# ruleid: tmops-no-shell, tmops-spawn-only-in-spawning-modules
subprocess.run("make test", shell=True)
# ruleid: tmops-no-shell, tmops-spawn-only-in-spawning-modules
os.system("make test")
# ruleid: tmops-no-shell, tmops-spawn-only-in-spawning-modules
asyncio.create_subprocess_shell("make test")
# ruleid: tmops-spawn-only-in-spawning-modules
subprocess.run(["git", "status"])
# ruleid: tmops-spawn-only-in-spawning-modules
os.execvp("git", ["git", "status"])
# ruleid: tmops-spawn-only-in-spawning-modules
os.fork()
# ok: tmops-spawn-only-in-spawning-modules
os.getpid()

# ruleid: tmops-yaml-safe-load-only
yaml.load("a: 1", Loader=yaml.Loader)
# ruleid: tmops-yaml-safe-load-only
yaml.full_load("a: 1")
# ruleid: tmops-yaml-safe-load-only
yaml.unsafe_load("a: 1")
# ok: tmops-yaml-safe-load-only
yaml.safe_load("a: 1")

# ruleid: tmops-open-through-layout
open(".tmops/auth-api/runs/initial/checkpoints/001-discovery-trigger.md")
# ok: tmops-open-through-layout
os.open("README.md", os.O_RDONLY | os.O_NOFOLLOW)
