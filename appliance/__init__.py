"""classcam: a classroom camera that a teacher uses to record their own lessons."""

__version__ = "0.1.0"
