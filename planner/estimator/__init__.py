"""Memory of one fine-tuning step: ``estimate()`` and ``estimate_with_advice()``."""

from planner.estimator.api import estimate_with_advice  # noqa: F401 - the package's public API
from planner.estimator.core import estimate  # noqa: F401
from planner.estimator.fits import usable_gib  # noqa: F401
