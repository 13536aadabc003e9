"""Layer 0, the file formats: what the benchmark reads and writes, and nothing that computes a gradient.

``contract`` (the results contract: every file a run writes, its fields and statuses), ``errors`` (the one
error the tools turn into a paragraph and exit code 2), ``files`` (atomic writes, strict JSON, metrics.csv),
``names`` (names that become parts of paths, made safe), ``version`` (the code version and provenance of a
run), ``tables`` (Markdown tables) and ``configs`` (where the Hydra configs are, and composing them).

Nothing here imports torch or any other layer of ``bench``; every other layer may import it.
"""
