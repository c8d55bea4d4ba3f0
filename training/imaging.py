"""Image decoding for training: the same functions the service uses (``service/imaging.py``).

Re-exported, not copied: one definition of colour modes, resize methods and decoding serves
both halves, and ``service/`` never imports ``training/``.
"""

from service.imaging import (  # noqa: F401
    GRAYSCALE_MODES,
    IMAGE_SUFFIXES,
    RESAMPLING,
    ColorMode,
    decode_image,
    is_grayscale,
    open_image,
    to_mode,
)
