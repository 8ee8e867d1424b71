"""The HTTP app's limits and defaults, in one place (``visualsim.serve.app`` re-exports them)."""

from __future__ import annotations

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Default upload limit (20 MiB): larger bodies get 413 before they are read in full."""

MAX_PIXELS = 4_000_000
"""Default pixel budget of an uploaded image (width x height, 4 megapixels).

Counted from the image's header at the scale it would be decoded (a JPEG is
decoded reduced towards the model's input size, draft mode, so a 48 MP phone
JPEG counts as about 1 MP for a 224 px model); more is refused (422) before
any pixel is decoded. The decoding memory is bounded to what an RGBA image of
this many pixels takes, so one upload costs a bounded amount of memory and time.
"""

HEAVY_PIXELS = 1_000_000
"""An upload decoding to more pixels than this (at its draft scale) is *heavy*."""

HEAVY_BYTES = 1 << 20
"""An upload of more bytes than this (1 MiB) is *heavy*: its decoder inflates or entropy
decodes all of them. Heavy uploads use at most ``threads - 1`` model threads at once, so
one is always left for the light ones (a normal search), whatever a few clients post."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a client's JSON (more: 400)."""

FRAME_POLICY = "frame-ancestors 'none'"
"""The Content-Security-Policy every answer carries (the page adds it to its own): no framing."""

MAX_DUPLICATES = 100_000
"""Most pairs or groups one ``GET /duplicates`` lists (its ``limit``; default 1,000)."""

MAX_REGIONS = 8
"""Most regions one ``POST /query/regions`` searches (its ``max_regions``; default 5)."""

MAX_VALUES = 1000
"""Most values one ``GET /fields/{name}/values`` lists (its ``limit``; default 20)."""

DISTINCT_FIELD = "field:"
"""Prefix of a ``distinct`` value naming a metadata field: ``distinct=field:style_id``."""

QUEUE_TIMEOUT_S = 10.0
"""Default seconds a request waits for a model thread before it is answered 503."""

RELOAD_POLL_S = 0.2
"""How often (seconds) an app with a ``reload_signal`` file checks it for a new reload."""

MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may carry beyond the image itself (headers, id, metadata)."""

BACKOFF_MAX_S = 1.0
"""Default longest wait (seconds) :class:`~visualsim.serve.middleware.RefusalBackoff` puts
before a request from a client whose requests keep being refused (``--refusal-backoff``)."""

BACKOFF_FREE = 20
"""Refusals a client may collect (they fade over :data:`BACKOFF_WINDOW_S`) before its
requests are held at all: a shopper's few bad uploads are never slowed."""

BACKOFF_STEP_S = 0.05
"""Seconds of wait each refusal past :data:`BACKOFF_FREE` adds."""

BACKOFF_WINDOW_S = 10.0
"""Seconds over which a client's count of refusals fades (its time constant)."""
