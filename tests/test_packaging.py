"""Installable as documented: `pip install -e .` reads its dependencies from requirements.txt
(tensorboard, which the README runs, included), `muse-jax` is the command line's entry, and the
README's set-up stays two commands."""

import importlib
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_pyproject_installs_the_package_with_the_requirements():
    project = tomllib.loads(read("pyproject.toml"))
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert project["tool"]["setuptools"]["package-data"]["muse_jax.data"] == ["demo_corpus/*"]
    module, _, function = project["project"]["scripts"]["muse-jax"].partition(":")
    assert module == "muse_jax.main" and callable(getattr(importlib.import_module(module), function))


def test_requirements_pin_every_package_tensorboard_included():
    lines = [line.strip() for line in read("requirements.txt").splitlines() if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", line) for line in lines), lines
    assert "tensorboard" in {line.split("==")[0] for line in lines}


def test_the_readme_sets_up_and_tests_in_two_commands():
    section = read("README.md").split("## Two commands", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["pip install -r requirements.txt && python -m muse_jax.main --config configs/tiny_ja.py",
                        "python -m pytest -q tests"]
