"""Reference fork-join decoder (PyTorch, any HF causal LM, CPU or GPU): the oracle for every engine.
It drives the engine protocol of `npr.forkjoin` unchanged."""

from npr.decoding.config import DecodingConfig, SamplingParams
from npr.decoding.decoder import DecodeResult, Decoder, sequential_replay
from npr.decoding.scripted import ForcedTokens, ScriptedStructure

__all__ = ["Decoder", "DecodingConfig", "SamplingParams", "ScriptedStructure", "ForcedTokens", "DecodeResult", "sequential_replay"]
