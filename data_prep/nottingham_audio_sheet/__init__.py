"""TFDS package of the ``nottingham_audio_sheet`` builder."""

from data_prep.nottingham_audio_sheet.nottingham_audio_sheet import NottinghamAudioSheet

__all__ = ['NottinghamAudioSheet']
