"""VideoMage engine: multi-subject and motion customization of text-to-video diffusion models.

Headless (no ComfyUI import). The method is specified in ``shared/method.md``; each paper
equation lives in one named function (see ``losses.py`` and ``sampling.py``).
"""

__version__ = "0.1.0"
