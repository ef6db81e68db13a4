"""Data: MUSDB18(-HQ)-layout songs, cached decoding, augmentations and training/validation chunks.

``load_subset`` gives whole songs (:class:`TrackAudio`) for evaluation; ``build_datasets`` gives the
training (:class:`TrainChunks`) and validation (:class:`ValidChunks`) datasets the trainer uses.
"""

from sepcore.data.dataset import (
    TrainChunks,
    ValidChunks,
    build_datasets,
    list_tracks,
    load_subset,
)
from sepcore.data.track import TrackAudio

__all__ = ["TrackAudio", "TrainChunks", "ValidChunks", "build_datasets", "list_tracks",
           "load_subset"]
