"""The long-context study's report (`experiments/long_context.py`): runs.jsonl rows → summary,
table.md, recall.png, extrapolation.png."""

from experiments.figures import finish, pyplot
from experiments.stats import mean, paired_difference, sample_sd


def spread(values: list[float]) -> dict:
    return {"mean": mean(values), "sd": sample_sd(values), "per_seed": values, "n_seeds": len(values)}


def order(x) -> tuple:
    """Sort key: numbers by value, then strings, then None."""
    return (0, x, "") if isinstance(x, (int, float)) else (1, 0, x) if isinstance(x, str) else (2, 0, "")


def grouped(rows: list[dict], study: str, keys: tuple[str, ...], value, reduce=spread) -> list[dict]:
    """Per (model, width, *keys of an evaluation): `reduce` of `value(evaluation)` over the seeds, sorted."""
    groups: dict[tuple, list] = {}
    params = {}
    for row in sorted((r for r in rows if r["study"] == study), key=lambda r: r["seed"]):
        params[(row["model"], row["width"])] = row["params"]
        for e in row["evals"]:
            groups.setdefault((row["model"], row["width"], *(e[k] for k in keys)), []).append(value(e))
    return [{"model": g[0], "width": g[1], **dict(zip(keys, g[2:])), "params": params[g[:2]], **reduce(v)}
            for g, v in sorted(groups.items(), key=lambda kv: tuple(order(x) for x in kv[0]))]


def by_position(rows: list[dict]) -> list[dict]:
    """Text: per model and eval window, the mean ± sd over seeds of the loss in each position bucket."""
    out = []
    for entry in grouped(rows, "text", ("eval.seq_len",), lambda e: e["by_position"]["loss"],
                         reduce=lambda v: {"per_seed": v, "n_seeds": len(v)}):
        curves = entry.pop("per_seed")
        buckets = list(zip(*curves))
        first = next(r for r in rows if r["study"] == "text")["evals"]
        start = next(e for e in first if e["eval.seq_len"] == entry["eval.seq_len"])["by_position"]["bucket_start"]
        out.append({"model": entry["model"], "seq_len": entry["eval.seq_len"], "bucket_start": start,
                    "loss_mean": [mean(b) for b in buckets], "loss_sd": [sample_sd(b) for b in buckets],
                    "n_seeds": entry["n_seeds"]})
    return out


def paired_text_differences(rows: list[dict]) -> list[dict]:
    """Text: val_loss of bk − transformer, paired by seed, at each eval window (≥ 2 seeds)."""
    text = [r for r in rows if r["study"] == "text"]
    loss = {(r["model"], r["seed"], e["eval.seq_len"]): e["val_loss"] for r in text for e in r["evals"]}
    out = []
    for n in sorted({k[2] for k in loss}):
        seeds = sorted(s for m, s, k in loss if m == "bk" and k == n and ("transformer", s, n) in loss)
        if len(seeds) >= 2:
            out.append({"seq_len": n, "bk_minus_transformer": paired_difference(
                [loss[("bk", s, n)] for s in seeds], [loss[("transformer", s, n)] for s in seeds])})
    return out


def summarize(rows: list[dict], preset: dict, config: str, train_len: int, train_pairs: int) -> dict:
    return {
        "config": config, "preset": preset, "train_seq_len": train_len, "mqar_train_pairs": train_pairs,
        "mqar": grouped(rows, "mqar", ("eval.seq_len", "data.mqar.num_pairs"), lambda e: e["val_accuracy"]),
        "passkey": grouped(rows, "passkey", ("eval.seq_len", "data.passkey.depth"), lambda e: e["val_accuracy"]),
        "text": grouped(rows, "text", ("eval.seq_len",), lambda e: e["val_loss"]),
        "text_by_position": by_position(rows),
        "text_difference": paired_text_differences(rows),
        "note": f"every run trained at train.seq_len {train_len}; mqar and passkey: accuracy (argmax = target) on the "
                "answer tokens of 128 held-out sequences per point, the same for every seed; text: validation loss "
                "(nats/token) on the same 14,336 demo-corpus targets in windows of each eval length; mean ± sample sd "
                "over seeds; text_difference: paired by seed with its 95 % t interval (negative: ResNet-BK better)."}


def pm(e: dict, digits: int = 3) -> str:
    return f"{e['mean']:.{digits}f} ± {e['sd']:.{digits}f}"


def table(summary: dict) -> str:
    n = summary["train_seq_len"]
    lines = [f"Long context, {summary['config']}, every model trained at {n} tokens "
             f"({summary['preset']['steps']} steps); mean ± sd over seeds.", ""]
    lines += [f"MQAR (trained with {summary['mqar_train_pairs']} pairs): accuracy on the answers (chance: one over "
              "the number of values; one over the pairs for a model that only knows which values were given).", "",
              "| d_model | model | params | eval length | pairs | accuracy | seeds |", "|---:|---|---:|---:|---:|---|---:|"]
    lines += [f"| {e['width']} | {e['model']} | {e['params']:,} | {e['eval.seq_len']} | {e['data.mqar.num_pairs']} | "
              f"{pm(e)} | {e['n_seeds']} |" for e in summary["mqar"]]
    lines += ["", "Passkey: accuracy on the digits (chance 0.1).", "",
              "| model | params | eval length | depth | accuracy | seeds |", "|---|---:|---:|---:|---|---:|"]
    lines += [f"| {e['model']} | {e['params']:,} | {e['eval.seq_len']} | {e['data.passkey.depth']:g} | {pm(e)} | "
              f"{e['n_seeds']} |" for e in summary["passkey"]]
    lines += ["", "Text (demo corpus): validation loss on the same targets in longer windows, nats/token.", "",
              "| model | params | eval length | × train | val_loss | seeds |", "|---|---:|---:|---:|---|---:|"]
    lines += [f"| {e['model']} | {e['params']:,} | {e['eval.seq_len']} | {e['eval.seq_len'] // n} | {pm(e, 4)} | "
              f"{e['n_seeds']} |" for e in summary["text"]]
    if summary["text_difference"]:
        lines += ["", "| eval length | bk − transformer [95 % CI] |", "|---:|---|"]
        lines += [f"| {d['seq_len']} | {d['bk_minus_transformer']['mean']:+.4f} [{d['bk_minus_transformer']['ci_low']:+.4f}, "
                  f"{d['bk_minus_transformer']['ci_high']:+.4f}] |" for d in summary["text_difference"]]
    return "\n".join(lines) + "\n"


def errorbar_line(ax, entries: list[dict], x: str, label: str) -> None:
    entries = sorted(entries, key=lambda e: e[x])
    ax.errorbar([e[x] for e in entries], [e["mean"] for e in entries], yerr=[e["sd"] for e in entries],
                marker="o", ms=3, capsize=3, label=label)


def plot_recall(summary: dict, path: str) -> None:
    """MQAR accuracy vs eval length (at the training pairs) and vs pairs (at the training length);
    passkey accuracy vs depth at each eval length."""
    plt = pyplot()
    n, trained_pairs = summary["train_seq_len"], summary["mqar_train_pairs"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    mqar, passkey = summary["mqar"], summary["passkey"]
    for model, width in sorted({(e["model"], e["width"]) for e in mqar}):
        mine = [e for e in mqar if e["model"] == model and e["width"] == width]
        pairs = min({e["data.mqar.num_pairs"] for e in mine}, key=lambda p: abs(p - trained_pairs))
        errorbar_line(axes[0], [e for e in mine if e["data.mqar.num_pairs"] == pairs], "eval.seq_len",
                      f"{model} d{width} ({pairs} pairs)")
        errorbar_line(axes[1], [e for e in mine if e["eval.seq_len"] == n], "data.mqar.num_pairs", f"{model} d{width}")
    for model, length in sorted({(e["model"], e["eval.seq_len"]) for e in passkey}):
        errorbar_line(axes[2], [e for e in passkey if e["model"] == model and e["eval.seq_len"] == length],
                      "data.passkey.depth", f"{model}, length {length}")
    axes[0].set_xscale("log", base=2)
    for ax, title, xlabel in zip(axes, ("MQAR vs eval length", f"MQAR vs pairs, length {n}", "passkey vs depth"),
                                 ("eval length (tokens)", "key-value pairs", "depth of the key")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy on the answers")
        ax.set_ylim(-0.02, 1.02)
    finish(fig, axes, path, legend_fontsize=7)


def plot_extrapolation(summary: dict, path: str) -> None:
    """Text: loss by position in windows of each eval length, one panel per length."""
    plt = pyplot()
    curves = summary["text_by_position"]
    lengths = sorted({c["seq_len"] for c in curves})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5 * len(lengths), 4), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        for c in (c for c in curves if c["seq_len"] == length):
            line, = ax.plot(c["bucket_start"], c["loss_mean"], marker="o", ms=3, label=c["model"])
            ax.fill_between(c["bucket_start"], [m - s for m, s in zip(c["loss_mean"], c["loss_sd"])],
                            [m + s for m, s in zip(c["loss_mean"], c["loss_sd"])], color=line.get_color(), alpha=0.2)
        ax.axvline(summary["train_seq_len"], color="grey", ls=":", lw=1)
        ax.set_title(f"window {length} ({length // summary['train_seq_len']}× train)")
        ax.set_xlabel("position in the window (bucket start)")
        ax.set_ylabel("validation loss (nats/token)")
    finish(fig, list(axes[0]), path)
