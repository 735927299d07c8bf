"""Source readers for ingest: each yields :class:`~coderforge.data.sources.entry.Entry` objects, one per
file (or row) seen.

An entry is either readable (``read(limit)`` or ready ``text``) or a *refusal*: a
``(status, reason, detail)`` triple the ingest step records as it is (a traversal path in an
archive, a symlink leaving the tree, a zip bomb, a malformed row …). Readers never raise for one
bad file; a source that cannot be opened at all raises
:class:`~coderforge.data.sources.entry.SourceError`.

* :mod:`~coderforge.data.sources.entry`: the entry, refusals, the source error;
* :mod:`~coderforge.data.sources.paths`: path safety for untrusted trees (members, links);
* :mod:`~coderforge.data.sources.directory`: a local directory of repositories;
* :mod:`~coderforge.data.sources.archives`: tar and zip files, treated as hostile;
* :mod:`~coderforge.data.sources.git`: a git repository (local or cloned) at a ref;
* :mod:`~coderforge.data.sources.rows`: Parquet / JSONL rows in The Stack's layout;
* :mod:`~coderforge.data.sources.registry`: the source kind of a spec and :func:`open_source`.
"""

from coderforge.data.sources.entry import Entry, SourceError
from coderforge.data.sources.registry import open_source

__all__ = ["Entry", "SourceError", "open_source"]
