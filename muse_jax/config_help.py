"""`--help`: the command's flags, then every key of the config with its default and the comment
written beside it in the config file, grouped by section.

Comments are read from the source with `ast` (which line assigns which key: `c.train.steps = 600`)
and `tokenize` (the comments of those lines, and comment-only lines right below one, which
continue it). A config that builds on another (`from configs import tiny_ja`) shows that file's
comments for the keys it does not comment itself.
"""

import ast
import importlib.util
import io
import os
import tokenize

DEFAULT_CONFIG = os.path.join("configs", "tiny_ja.py")


def _attribute_path(node: ast.expr) -> list[str] | None:
    """`c.a.b` → ["a", "b"] (the root name dropped); None if not a plain attribute chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return parts[::-1] if isinstance(node, ast.Name) and parts else None


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """{line: comment text} and the lines holding only a comment."""
    comments, code_lines = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    alone = {line for line in comments if line not in code_lines}
    return comments, alone


def key_comments(path: str) -> dict[str, str]:
    """{"train.steps": "optimizer steps", "optim.symplectic": "leapfrog on …", …} of one config file,
    in the order the file assigns the keys ("" for a key assigned without a comment)."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    comments, alone = _comments(source)
    assignments = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
                   and len(node.targets) == 1 and _attribute_path(node.targets[0])]
    out = {}
    for node in sorted(assignments, key=lambda n: n.lineno):
        text = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        following = node.end_lineno + 1
        while text and following in alone:  # a comment continued on the lines below
            text.append(comments[following])
            following += 1
        out[".".join(_attribute_path(node.targets[0]))] = " ".join(text)
    return out


def _base_configs(path: str) -> list[str]:
    """Config files of the same folder that `path` imports (`from configs import tiny_ja`), bases first."""
    folder = os.path.dirname(os.path.abspath(path))
    package = os.path.basename(folder)
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == package
             for alias in node.names]
    bases = []
    for name in names:
        base = os.path.join(folder, f"{name}.py")
        if os.path.isfile(base):
            bases += [p for p in _base_configs(base) + [base] if p not in bases]
    return bases


def all_comments(path: str) -> dict[str, str]:
    """key_comments of the config and of the configs it builds on: the first file to assign a key
    places it, the last one to comment it gives the comment."""
    out: dict[str, str] = {}
    for p in _base_configs(path) + [path]:
        for key, comment in key_comments(p).items():
            out[key] = comment or out.get(key, "")
    return out


def load_config(path: str):
    """get_config() of a config file, as `--config` would load it."""
    spec = importlib.util.spec_from_file_location("muse_jax_help_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _leaves(config, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_help(path: str, max_width: int = 56) -> list[str]:
    """Every key of the config at `path`, `key = default  # comment`, grouped by section (the
    section's own comment on its heading), in the order the config files assign them."""
    comments = all_comments(path)
    order = {key: i for i, key in enumerate(comments)}
    values = _leaves(load_config(path))
    sections: dict[str, list[str]] = {}
    for key in sorted(values, key=lambda k: (order.get(k, len(order)), k)):
        sections.setdefault(key.rpartition(".")[0], []).append(key)
    width = min(max_width, max(len(f"  {k} = {v!r}") for k, v in values.items()))
    lines = []
    for section in sorted(sections, key=lambda s: (s != "", order.get(s, order.get(sections[s][0], 0)))):
        heading = section or "(top level)"
        lines += ["", heading + (f"    # {comments[section]}" if comments.get(section) else "")]
        for key in sections[section]:
            text = f"  {key} = {values[key]!r}"
            lines.append(f"{text:<{width}}  # {comments[key]}" if comments.get(key) else text)
    return lines


def _config_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def help_text(argv: list[str], flag_list) -> str:
    """The text of `--help`: usage, the flags (absl Flag objects), the config's keys (of
    `--config`, else configs/tiny_ja.py when run from the repository root)."""
    lines = ["usage: python -m muse_jax.main --config configs/tiny_ja.py [--config.KEY=VALUE ...] [--mode=MODE] "
             "[flags]", "       (or: muse-jax ...)", "", "flags:"]
    for flag in flag_list:
        default = "" if flag.default is None else f" (default: {flag.default!r})"
        lines.append(f"  --{flag.name}: {flag.help}{default}")
    path = _config_argument(argv) or (DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None)
    if path is None:
        lines += ["", "give --config FILE to list its keys"]
        return "\n".join(lines)
    lines += ["", f"config keys of {path}, their defaults and comments (override any with --config.KEY=VALUE):"]
    try:
        lines += config_help(path)
    except Exception as e:  # a missing or broken config file: the flags are still shown
        lines.append(f"cannot load {path!r}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
    return "\n".join(lines)
