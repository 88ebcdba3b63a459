"""Built-in feature families, registered as entry points like any plugin's.

``basic`` (:mod:`segdash.features.basic`): Gaussian-smoothed intensity, edges and Hessian
texture at several scales, per channel. The contract every family follows is in
:mod:`segdash.contract`; :class:`segdash.stack.FeatureStack` combines families.
"""
