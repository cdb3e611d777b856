"""The images a run reads, as ``inspector analyze`` reads them: the builtin set, folders,
files, Datasets and DataLoaders, with the model's own preprocessing (timm's data config).

``open_images(source, model_transform(model)[0], limit, seed=...)`` gives the
:class:`ImageSet` a run iterates in batches; unreadable files are skipped and counted.
"""

from __future__ import annotations

from ._images import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from ._images import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from ._images import MAX_ASPECT as MAX_ASPECT
from ._images import ImageSet as ImageSet
from ._images import builtin_images_dir as builtin_images_dir
from ._images import model_class_names as model_class_names
from ._images import model_transform as model_transform
from ._images import open_images as open_images

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT",
    "ImageSet",
    "builtin_images_dir",
    "model_class_names",
    "model_transform",
    "open_images",
]
