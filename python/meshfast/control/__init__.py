"""The control side: the sidecar's life cycle (``sidecar``) and its admin API (``admin``, ``http``).

Importing this package imports nothing else; its modules import Trio.
"""
