"""The demo corpus shipped with the package (see demo_corpus/SOURCES.md)."""

import os

DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_corpus")
DEMO_SOURCES = (
    os.path.join(DEMO_DIR, "manpages_ja.jsonl"),
    os.path.join(DEMO_DIR, "debian_docs_ja.txt"),
)
