"""inspector: how far CNN channels and transformer heads look, and how redundant they are."""

from ._errors import ImageError as ImageError
from ._errors import InspectorError as InspectorError
from ._errors import ModelNotFoundError as ModelNotFoundError
from ._errors import RunFileError as RunFileError
from ._errors import WeightsError as WeightsError

__version__ = "0.1.0"

__all__ = [
    "ImageError",
    "InspectorError",
    "ModelNotFoundError",
    "RunFileError",
    "WeightsError",
    "__version__",
]
