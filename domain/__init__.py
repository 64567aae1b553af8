"""A vertical's domain pack: one folder (``VQA_PACK``) loaded, validated and linted as a whole.

``DomainPack.load(path)`` reads the manifest, corpus, graph rows, rules, QA sets and calibration slot; the service,
the graph loader, retrieval and the training QA builder all take their part from it. ``vqa pack ...`` is its CLI.
"""
