"""Type strings and shared constants of the VideoMage node pack (no ComfyUI import)."""

CATEGORY = "VideoMage"

MODEL = "VIDEOMAGE_MODEL"  # videomage_core.model.VideoMageModel
SUBJECT = "VIDEOMAGE_SUBJECT"  # videomage_core.artifacts.LoraArtifact, kind "subject" (single or fused)
MOTION = "VIDEOMAGE_MOTION"  # videomage_core.artifacts.LoraArtifact, kind "motion"
IMAGE = "IMAGE"  # float [N, H, W, 3] 0..1; a video is one batch of frames
MASK = "MASK"  # float [N, H, W] 0..1
STRING = "STRING"

MAX_SEED = 0xFFFFFFFFFFFFFFFF
MAX_SIZE = 4096
ARTIFACT_SUBFOLDER = "videomage"  # under every `loras` folder, <output>/loras/videomage/ for saves
