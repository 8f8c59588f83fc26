"""Semantic reuse: questions that mean the same about the same document (see ``run/semantic.py``).

What is here is pure and local: what a question says that its embedding does not weigh
(``facts.py``), the offline embedding model (``local_model.py``) and the in-process index of
answered questions (``index.py``). Where the index is shared (Redis) and how a job uses it is
``state/semantic_store.py`` and ``run/semantic.py``.
"""
