"""Errors the engine raises on purpose: each names the input at fault and what was expected."""


class VideoMageInputError(ValueError):
    """Bad user input. ``input_name`` is the argument, node input or CLI flag at fault."""

    def __init__(self, input_name: str, message: str):
        self.input_name = input_name
        super().__init__(f"{input_name}: {message}")


class TrainingCancelled(RuntimeError):
    """Raised when a cancel check asks a training or sampling loop to stop."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the trainable state is the last good one."""


class IncompatibleArtifactError(ValueError):
    """A saved LoRA/token artifact does not fit the loaded base model or is not a VideoMage file."""


def require(condition: bool, input_name: str, message: str) -> None:
    """Raise :class:`VideoMageInputError` for ``input_name`` unless ``condition`` holds."""
    if not condition:
        raise VideoMageInputError(input_name, message)
