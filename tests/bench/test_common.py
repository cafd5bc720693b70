"""What every result file records: the commit, also where the copy has no git (GPU machines);
putting a process tree on chosen CPUs."""

import os
import subprocess
import sys
from pathlib import Path

import psutil

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


def test_pin_process_tree_moves_every_thread_of_children_and_grandchildren():
    # a child with a second thread, which starts a grandchild
    code = ("import subprocess, sys, threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(g.pid, flush=True)\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    grandchild = None
    try:
        grandchild = int(child.stdout.readline())
        target = {max(os.sched_getaffinity(0))}
        tree = [child.pid, grandchild]
        assert [p.pid for p in psutil.Process(child.pid).children(recursive=True)] == [grandchild]
        assert common.pin_process_tree(child.pid, target) >= 3  # 2 threads + the grandchild
        for pid in tree:
            for tid in Path(f"/proc/{pid}/task").iterdir():
                assert os.sched_getaffinity(int(tid.name)) == target
    finally:
        child.kill()
        child.wait()
        if grandchild is not None:
            os.kill(grandchild, 9)
