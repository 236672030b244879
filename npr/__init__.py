"""native-parallel-reasoner core: schema, layout, masks, the fork-join protocol (`npr.forkjoin`, no
torch) and the reference fork-join decoder. `structured_logprobs` is loaded on first use, so importing
a torch-free part of the package never imports torch."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "structured_logprobs":
        from npr.structured import structured_logprobs

        return structured_logprobs
    raise AttributeError(f"module 'npr' has no attribute {name!r}")
