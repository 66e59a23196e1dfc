"""Finding, checking and opening prepared data (the output of ``prepare``).

* ``data.out_dir`` set: that folder. Training uses it as it is when it holds
  prepared data (the raw dumps need not exist any more), after checking that it
  was prepared with the configured settings; when it holds none, it is
  prepared first.
* ``data.out_dir`` empty: ``<cache_dir>/<key>``, where the key hashes the
  content of every input file, the sources' names, kinds and fields, and the
  settings that shape the data; training prepares it when it is missing, so
  a fresh clone needs one command.

Mixing weights are read from the configured manifest (or data.sources) every
time, not from the prepared folder: changing a weight needs no new prepare,
and a weight written in the manifest is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys

import numpy as np

from muse_jax.data.chunks import file_sha256
from muse_jax.data.cleaning import clean_document, nfkc_normalize
from muse_jax.data.errors import DataError
from muse_jax.data.manifest import configured_sources
from muse_jax.data.prepare import META_FILE, PREPARED_FORMAT_VERSION, content_settings, prepare
from muse_jax.settings import DataSettings

__all__ = ["PreparedData", "load_prepared", "out_dir_for", "prepared_for_training", "run_prepare"]


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """An opened prepared folder, with the mixing weight of each source."""

    directory: str
    meta: dict
    weights: tuple[float, ...]  # one per source, in meta order

    @property
    def tokenizer_path(self) -> str:
        return os.path.join(self.directory, self.meta["tokenizer"]["file"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @property
    def eos_id(self) -> int:
        return int(self.meta["tokenizer"]["eos_id"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"]).newbyteorder("<")

    @property
    def normalize_nfkc(self) -> bool:
        """Whether the training text was NFKC-normalised (the prepared data's settings)."""
        return bool(self.meta["settings"]["normalize_nfkc"])

    def prompt_ids(self, sp, text: str) -> list[int]:
        """`text` as a document start the model was trained on: EOS first (documents are
        EOS-separated), then the tokens of the text, NFKC-normalised when the training text was
        (the tokenizer itself normalises nothing), so "ＡＢＣ" or half-width ｶﾅ in a prompt meet
        the tokens training saw."""
        if self.normalize_nfkc:
            text = nfkc_normalize(text)
        return [self.eos_id] + sp.encode(text)

    def text_file_ids(self, sp, path: str) -> np.ndarray:
        """The tokens of a UTF-8 text file taken as one document, as training would see it:
        cleaned like the training text (control characters, NFKC when it was, outer whitespace),
        between EOS tokens. A missing or non-UTF-8 file is a DataError naming it."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path} (byte {e.start}): not UTF-8 text") from None
        return np.asarray(self.prompt_ids(sp, clean_document(text, self.normalize_nfkc)) + [self.eos_id], np.int32)

    @property
    def source_names(self) -> list[str]:
        return [s["name"] for s in self.meta["sources"]]

    def split(self, source: int, split: str) -> dict:
        """``{"documents", "tokens", "shards": [absolute paths]}`` of a source's split."""
        entry = self.meta["sources"][source][split]
        return {**entry, "shards": [os.path.join(self.directory, p) for p in entry["shards"]]}


def _no_constant(name: str):
    raise ValueError(f"non-standard JSON number {name}")


def _check_dtype(path: str, meta: dict) -> None:
    """The token dtype must be an unsigned integer that holds every id of the vocabulary."""
    vocab = meta["tokenizer"]["vocab_size"]
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError:
        raise DataError(f"{path}: dtype {meta['dtype']!r} is not a numpy dtype; run --mode=prepare again") from None
    if dtype.kind != "u" or np.iinfo(dtype).max < vocab - 1:
        raise DataError(f"{path}: dtype {dtype.name} cannot hold the token ids of a vocabulary of {vocab}; "
                        "run --mode=prepare again")


def load_prepared(directory: str, weights: dict[str, float] | None = None) -> PreparedData:
    """Opens a prepared folder; ``weights`` by source name (default: those recorded).

    Raises:
      DataError: no or damaged meta.json (Infinity or NaN in it included, or a token dtype
        that cannot hold the vocabulary), missing shards or tokenizer, or weights that do not
        name exactly the prepared sources.
    """
    path = os.path.join(directory, META_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f, parse_constant=_no_constant)
    except FileNotFoundError:
        raise DataError(f"{directory}: no prepared data ({META_FILE} missing); "
                        "run --mode=prepare") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: damaged ({e}); run --mode=prepare again") from None
    if meta.get("format_version") != PREPARED_FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta.get('format_version')}, this code reads "
                        f"{PREPARED_FORMAT_VERSION}; run --mode=prepare again")
    _check_dtype(path, meta)
    names = [s["name"] for s in meta["sources"]]
    if weights is None:
        weights = {s["name"]: s["weight"] for s in meta["sources"]}
    if sorted(weights) != sorted(names):
        raise DataError(f"{directory}: prepared sources {names} differ from the configured "
                        f"sources {sorted(weights)}; run --mode=prepare again")
    data = PreparedData(directory, meta, tuple(float(weights[n]) for n in names))
    missing = [p for i in range(len(names)) for split in ("train", "val")
               for p in data.split(i, split)["shards"] if not os.path.isfile(p)]
    if not os.path.isfile(data.tokenizer_path):
        missing.append(data.tokenizer_path)
    if missing:
        raise DataError(f"{directory}: prepared data is incomplete, missing {missing[0]}")
    return data


def out_dir_for(settings: DataSettings) -> str:
    """data.out_dir, or the automatic ``<cache_dir>/<key>`` (hashes every input file)."""
    if settings.out_dir:
        return settings.out_dir
    sources = [
        {"name": s.name, "kind": s.kind, "field": s.field,
         "files": [file_sha256(p) for p in s.files]}
        for s in configured_sources(settings, check_files=True)
    ]
    payload = json.dumps({"format_version": PREPARED_FORMAT_VERSION, "sources": sources,
                          "settings": content_settings(settings)}, sort_keys=True)
    return os.path.join(settings.cache_dir, "prepared-" + hashlib.sha256(payload.encode()).hexdigest()[:16])


def _configured_weights(settings: DataSettings) -> dict[str, float]:
    return {s.name: s.weight for s in configured_sources(settings, check_files=False)}


def _check_settings(directory: str, meta: dict, settings: DataSettings) -> None:
    recorded, wanted = meta["settings"], content_settings(settings)
    differ = [f"{k}: prepared {recorded.get(k)!r}, configured {wanted.get(k)!r}"
              for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k)]
    if differ:
        raise DataError(f"{directory}: prepared with other data settings ({'; '.join(differ)}); "
                        "run --mode=prepare again or change the config back")


def _describe(data: PreparedData) -> str:
    total = sum(data.weights)
    mixture = ", ".join(f"{n} {w / total:.0%}" for n, w in zip(data.source_names, data.weights))
    return (f"prepared data {data.directory}: vocab {data.vocab_size}, train "
            f"{data.meta['train_tokens']:,} tokens, val {data.meta['val_tokens']:,} tokens; "
            f"mixture (share of training tokens): {mixture}")


def prepared_for_training(settings: DataSettings) -> PreparedData:
    """The prepared data of the config, preparing it first when there is none."""
    directory = out_dir_for(settings)
    weights = _configured_weights(settings)
    if os.path.isfile(os.path.join(directory, META_FILE)):
        data = load_prepared(directory, weights)
        _check_settings(directory, data.meta, settings)
    else:
        print(f"[muse_jax.data] no prepared data in {directory}: preparing it", file=sys.stderr, flush=True)
        prepare(settings, directory)
        data = load_prepared(directory, weights)
    print(f"[muse_jax.data] {_describe(data)}", file=sys.stderr, flush=True)
    return data


def run_prepare(settings: DataSettings) -> PreparedData:
    """``--mode=prepare``: (re)prepares the configured data into its out_dir."""
    directory = out_dir_for(settings)
    prepare(settings, directory)
    data = load_prepared(directory, _configured_weights(settings))
    print(f"[muse_jax.data] {_describe(data)}", file=sys.stderr, flush=True)
    print(directory)
    return data
