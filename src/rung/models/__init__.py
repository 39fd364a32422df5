"""The model layer: a registered version's files, verified and loaded, whatever its flavour.

Below everything that uses models (certification, serving, monitoring,
reproduction, batch scoring), above the store and tracking. ``signature``
says what a model takes, ``flavours`` how files become a predictor,
``loader`` fetches and verifies a version, ``compiled`` is the fast route
through a fitted scikit-learn pipeline. A new flavour goes in ``flavours``.
"""
