"""Neighbouring methods from the literature, as chainable optax transformations.

Gradient surgery, orthogonal projection for continual learning, adaptive step sizes and
hyperparameter scaling rules that users of orthogonalized optimizers reach for. Each is an
``optax.GradientTransformation`` (or ``GradientTransformationExtraArgs`` where it needs the
loss value or a second gradient) that chains with the rest of optorth and optax.
"""

__all__: list[str] = []
