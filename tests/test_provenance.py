"""A result's commit is marked +dirty by a changed code file, not by the results it writes."""

import os
import shutil
import subprocess

import pytest

from muse_jax import provenance


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_only_changes_outside_results_make_a_commit_dirty(tmp_path):
    repo = tmp_path / "repo"
    os.makedirs(repo / "muse_jax")
    shutil.copy(provenance.__file__, repo / "muse_jax" / "provenance.py")
    (repo / "code.py").write_text("x = 1\n")
    os.makedirs(repo / "results")
    (repo / "results" / "r.json").write_text("{}\n")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                       capture_output=True)

    def commit_of():
        out = subprocess.run(["python", "-c", "from muse_jax.provenance import git_commit; print(git_commit())"],
                             cwd=repo, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    assert not commit_of().endswith("+dirty")
    (repo / "results" / "r.json").write_text('{"a": 1}\n')  # a study rewrote its own output
    assert not commit_of().endswith("+dirty")
    (repo / "code.py").write_text("x = 2\n")  # the code changed
    assert commit_of().endswith("+dirty")
