"""relay's benchmark: real relay nodes driven by load-generator processes over real sockets.

Run it with ``python -m bench`` from the repository root; see ``bench/README.md``.
"""
