"""Multi-utterance beam search for the decoder-only stack (torch only): see beam_search.py."""

from espnet_mtla.search.beam_search import EndedHypothesis, MultiUtteranceBeamSearch, length_limits

__all__ = ["EndedHypothesis", "MultiUtteranceBeamSearch", "length_limits"]
