"""The one way visualsim touches disk, one module per part (see :mod:`visualsim.persistence`).

``paths`` (safe names and limits), ``reads`` (bounded JSON/``.npy`` reads),
``fields`` (manifest field checks), ``manifests`` (the table of formats and the
one manifest writer and reader), ``writes`` (atomic file writes), ``folders``
(atomic folder swaps, marked temporaries), ``retry`` (the one retry loop for a
folder a save may be replacing), ``values`` (caller values as JSON). Every
public name is importable from here and from :mod:`visualsim.persistence`.
"""

from __future__ import annotations

from .fields import (
    field_bool,
    field_dict,
    field_float,
    field_int,
    field_list,
    field_str,
    require,
)
from .folders import (
    atomic_dir,
    check_replaceable,
    discard_temp_dir,
    exchange_supported,
    folder_tag,
    make_temp_dir,
    reader_lock,
    remove_stale_temps,
    replace_dir,
    writer_lock,
)
from .manifests import (
    FORMATS,
    MAX_MANIFEST_BYTES,
    TAG_PREFIX,
    Format,
    check_files,
    format_of,
    read_manifest,
    write_manifest,
)
from .paths import (
    MANIFEST,
    MARKER_SUFFIX,
    MAX_COUNT,
    MAX_DIM,
    MAX_FILES,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    NUMERIC_DTYPES,
    TMP_PREFIX,
    PathLike,
    list_files,
    safe_child,
)
from .reads import (
    check_finite_rows,
    json_depth,
    load_npy,
    parse_json,
    read_json,
    read_jsonl,
    read_npy_header,
    read_rows,
    sha256_file,
)
from .retry import (
    folder_identity,
    read_consistent,
    read_identity,
)
from .values import (
    json_safe,
    resolve_source,
)
from .writes import (
    atomic_write,
    fsync_dir,
    fsync_tree,
    write_bytes_atomic,
    write_json_atomic,
    write_npy,
    write_npy_atomic,
    write_text,
    write_text_atomic,
)

__all__ = [
    "FORMATS",
    "Format",
    "MANIFEST",
    "MARKER_SUFFIX",
    "MAX_COUNT",
    "MAX_DIM",
    "MAX_FILES",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST_BYTES",
    "NUMERIC_DTYPES",
    "PathLike",
    "TAG_PREFIX",
    "TMP_PREFIX",
    "atomic_dir",
    "atomic_write",
    "check_files",
    "check_finite_rows",
    "check_replaceable",
    "discard_temp_dir",
    "exchange_supported",
    "field_bool",
    "field_dict",
    "field_float",
    "field_int",
    "field_list",
    "field_str",
    "folder_identity",
    "folder_tag",
    "format_of",
    "fsync_dir",
    "fsync_tree",
    "json_depth",
    "json_safe",
    "list_files",
    "load_npy",
    "make_temp_dir",
    "parse_json",
    "read_consistent",
    "read_identity",
    "read_json",
    "read_jsonl",
    "read_manifest",
    "read_npy_header",
    "read_rows",
    "remove_stale_temps",
    "replace_dir",
    "require",
    "resolve_source",
    "safe_child",
    "sha256_file",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_manifest",
    "write_npy",
    "write_npy_atomic",
    "write_text",
    "write_text_atomic",
    "reader_lock",
    "writer_lock",
]
