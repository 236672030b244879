"""Fork-join decoding inside SGLang's scheduler process, driven by `npr.forkjoin` (the controller decides
every step; this package computes and reports): SGLang's own KV allocator behind the controller's slot
manager, one decode forward over per-token rows whose slot lists are exactly what the controller lets
each token see, and the outputs handed back to SGLang's output streamer."""
