"""AsyncEP: experts sharded across the workers of a node, gathered by weight in the background.

Modules: config (frozen flags), layout (which experts a rank stores), group (rendezvous, process
groups, liveness), shards (this rank's expert tensors), ring (full-layer buffers), backends
(collective, peer), engine (the step protocol), threshold (T), batcher (prefill batching to T),
runtime (the per-process state SGLang's hooks call into), metrics.
Everything here runs inside SGLang's scheduler process; the hooks are in moep_sglang.plugin.
"""
