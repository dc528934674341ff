"""Feature spaces of the evaluation, one module each, registered by name (:mod:`evaluation.spaces.base`).

:mod:`evaluation.features` registers the built-in ones and is the import point of the public names.
"""
