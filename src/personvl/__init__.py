"""personvl: person-centric vision-language representation learning."""

__version__ = "0.1.0"

from personvl import data, evaluation  # noqa: E402
from personvl.data import PersonRecord  # noqa: E402
from personvl.errors import PersonvlError, UsageError  # noqa: E402

__all__ = ["PersonRecord", "PersonvlError", "UsageError", "data", "evaluation", "__version__"]
