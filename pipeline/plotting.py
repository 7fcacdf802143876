"""Figures as PNG files: matplotlib without a display, one figure at a time, with the fonts
this machine has for class names in other scripts (Chinese, Japanese, Korean, ...)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

# fonts that draw what DejaVu Sans (matplotlib's own) does not, tried glyph by glyph after it
# where installed (e.g. `apt install fonts-noto-cjk`); where none is, such a name shows as boxes
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK KR", "Source Han Sans", "WenQuanYi Zen Hei",
                  "Droid Sans Fallback", "Microsoft YaHei", "PingFang SC", "Hiragino Sans", "Arial Unicode MS",
                  "Noto Sans")


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    from matplotlib import font_manager, rcParams

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return (*rcParams["font.sans-serif"][:1], *(name for name in FALLBACK_FONTS if name in installed))


@contextmanager
def saved_figure(path: Path, size: tuple[float, float], dpi: int = 110) -> Iterator:
    """``(fig, ax)`` to draw on; on leaving, laid out and saved to ``path``, and closed (also
    where drawing failed). A glyph no installed font has is drawn as a box, without a
    warning a glyph."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(), matplotlib.rc_context({"font.sans-serif": list(_fonts())}):
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig, ax = plt.subplots(figsize=size)
        try:
            yield fig, ax
            fig.tight_layout()
            fig.savefig(path, dpi=dpi)
        finally:
            plt.close(fig)
