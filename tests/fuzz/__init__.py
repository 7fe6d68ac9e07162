"""relay's own fuzzer: hostile input against a real relay process, over raw sockets.

``make fuzz`` runs it for 150 s (``python -m tests.fuzz --help``);
``tests/fuzz/test_fuzz.py`` runs a short seeded round in ``make test``.
"""
