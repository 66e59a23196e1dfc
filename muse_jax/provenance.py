"""What every result file records beside its numbers: command, machine, versions, commit, date."""

import datetime
import json
import os
import platform
import subprocess
import sys

import jax


def git_commit() -> str:
    """HEAD, with "+dirty" when a tracked file outside results/ differs from it: the code that
    produced a result. A study that writes several files into results/ (or appends to a committed
    runs.jsonl and resumes) changes only its own outputs, which do not make it dirty."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    """The command as typed: `python -m package.module args` when run with -m, else the script."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    argv = ["-m", spec.name, *sys.argv[1:]] if spec is not None and spec.name else sys.argv
    return " ".join([os.path.basename(sys.executable), *argv])


def provenance() -> dict:
    devices = jax.devices()
    return {
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(),
            "devices": [d.device_kind for d in devices],
        },
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
    }


def write_json(path: str, payload: dict) -> None:
    """Write atomically (temp name, then rename), with provenance first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"provenance": provenance(), **payload}, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
