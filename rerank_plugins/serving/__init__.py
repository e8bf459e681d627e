"""Serving: the HTTP app (TEI and Cohere ``/rerank`` protocols), its settings, and the Ray Serve deployment.

Needs the ``serve`` extra: ``pip install "rerank-plugins[serve]"``.
"""
