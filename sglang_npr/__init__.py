"""SGLang plugin: `register()` is the `sglang.srt.plugins` entry point. Importing this package does nothing."""

from sglang_npr.registration import is_registered, register

__all__ = ["register", "is_registered"]
