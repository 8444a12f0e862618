"""VideoMage for ComfyUI: multi-subject and motion customization of text-to-video models (CVPR 2025).

ComfyUI imports this folder as a package from ``custom_nodes/``. The engine, ``videomage_core``,
is imported by its absolute name, so the pack folder is appended to ``sys.path`` (appended, not
prepended: ComfyUI's own modules, such as its ``nodes``, keep precedence).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from videomage_core.dependencies import missing_message, missing_requirements  # noqa: E402

if missing_requirements():  # said once at start-up; each node's run says it again (nodes/common.py)
    print(f"[VideoMage] {missing_message(missing_requirements())}", file=sys.stderr, flush=True)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
