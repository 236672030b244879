"""Fork-join decoding inside SGLang's scheduler process, driven by `npr.forkjoin` (the controller decides
every step; this package computes and reports): prompts prefill in SGLang's own extend, the rows of
every live sequence ride SGLang's decode batch (req_to_token rows aliased at forks, concatenated at
joins, slots from SGLang's allocator), their tokens are chosen on the device in one batch, and the
outputs go back through SGLang's output streamer."""
