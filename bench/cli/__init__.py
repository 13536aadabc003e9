"""Layer 5, the command line: one module per command, each a ``main(argv) -> exit code``.

``main`` (``python -m bench``: one run or a Hydra sweep), ``report`` (``python -m bench.report``), ``check``
(``python -m bench.check``), ``tune`` (``python -m bench.tune``), ``perf`` (``python -m bench.perf``) and
``publish`` (``python -m bench.publish``). The modules ``bench/<command>.py`` (and
``bench/report/__main__.py``) only hand over to these.
"""
