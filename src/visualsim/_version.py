"""The version of visualsim, in one module nothing else needs to import first.

``pyproject.toml`` carries the same string (``tests/unit/test_architecture.py`` checks).
"""

__version__ = "0.1.0"
