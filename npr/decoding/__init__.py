"""Reference fork-join decoder (PyTorch, any HF causal LM, CPU or GPU): the oracle for every engine."""

from npr.decoding.config import DecodingConfig, SamplingParams
from npr.decoding.controller import ForkJoinController
from npr.decoding.decoder import DecodeResult, Decoder
from npr.decoding.scripted import ForcedTokens, ScriptedStructure

__all__ = ["Decoder", "DecodingConfig", "SamplingParams", "ScriptedStructure", "ForcedTokens", "DecodeResult",
           "ForkJoinController"]
