"""Multi-utterance beam search for the decoder-only stack (torch only): see beam_search.py."""

from espnet_mtla.search.beam_search import EndedHypothesis, MultiUtteranceBeamSearch, SearchResult, length_limits

__all__ = ["EndedHypothesis", "MultiUtteranceBeamSearch", "SearchResult", "length_limits"]
