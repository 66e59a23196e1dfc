"""Re-export: experiments import the provenance helpers from here."""

from muse_jax.provenance import git_commit, peak_rss_mb, provenance, write_json  # noqa: F401
