"""What every result file records: the commit, also where the copy has no git (GPU machines)."""

import subprocess

from bench import common


def test_git_sha_is_the_checkout_commit_here():
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=common.RESULTS.parent).stdout.strip()
    assert common.git_sha().startswith(head) and len(head) == 40


def test_git_sha_without_git_comes_from_moep_git_sha(monkeypatch):
    def no_git(*args, **kwargs):
        raise subprocess.CalledProcessError(128, args[0])

    monkeypatch.setattr(common.subprocess, "run", no_git)
    assert common.git_sha() == "unknown"
    monkeypatch.setenv("MOEP_GIT_SHA", "0123abc")
    assert common.git_sha() == "0123abc"
