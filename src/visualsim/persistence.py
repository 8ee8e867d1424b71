"""One way to write and read a visualsim folder, used by every on-disk format.

Catalogues, indexes, reducers, shard folders and checkpoints all go through
this module, so they share one set of guarantees:

* **A folder is a closed world.** Every name a manifest lists goes through
  :func:`safe_child`: absolute names, ``..``, backslashes, NUL bytes and any
  symbolic link on the way (the folder itself included) are refused, so a
  saved folder can never make visualsim open or hash a file outside it.
* **Bounded reads.** :func:`read_json` checks the size before reading and the
  nesting depth before parsing; :func:`load_npy` parses the ``.npy`` header
  and compares the size it claims with the file's real size *before*
  allocating; numbers too big, NaN, invalid UTF-8 or duplicate keys are a
  :class:`~visualsim.errors.CatalogError` naming the file, never a
  ``RecursionError``, ``MemoryError`` or ``ValueError``.
* **One manifest scheme.** Every format is a row of :data:`FORMATS` (kind,
  version, manifest name, old tag spellings still read), and every manifest
  carries ``format`` (``"visualsim.<kind>"``), ``format_version``,
  ``library_version`` and ``files`` (relative name -> SHA-256):
  :func:`write_manifest` writes it, :func:`read_manifest` reads it bounded
  (size, depth) and checks it all, and the ``field_*`` helpers check every
  other field's type and range.
* **Durable, atomic writes.** :func:`write_bytes_atomic` and friends write a
  temporary sibling, fsync it, rename it over the target and fsync the folder.
  :func:`replace_dir` swaps a complete new folder in with one
  ``renameat2(RENAME_EXCHANGE)`` (Linux), so the old or the new folder is at
  the path at every instant, and only replaces a folder that carries a
  manifest of the same format (or an empty folder): anything else is a
  ``CatalogError`` and nothing is touched.
* **Temporaries that clean up after a crash.** Temporary folders are named
  ``.visualsim-tmp-*`` and come with a sibling marker file naming the process
  that made them; :func:`remove_stale_temps` (called by every folder write)
  removes those whose process is gone. A name without our marker is never
  touched.

Readers that may race a writer use :func:`read_consistent`, the one loop that
retries a read that saw the folder change underneath it.

The code lives in the :mod:`visualsim.io` package, one module per part (paths,
reads, fields, manifests, writes, folders, retry, values); this module is its
one public face, and every caller imports it as ``from . import persistence as P``.
"""

from __future__ import annotations

from .io import *  # noqa: F403 (every public name of the io package)
from .io import __all__ as __all__
