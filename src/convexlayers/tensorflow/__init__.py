"""TensorFlow layers: ``from convexlayers.tensorflow import CvxpyLayer``.

The layer works eagerly, inside ``tf.function`` and inside Keras models
(``model.fit``, ``model.save`` / ``keras.models.load_model``). TensorFlow is an
optional dependency: ``pip install "convexlayers[tensorflow]"``.
"""

try:
    import keras as _keras
    import tensorflow as _tf
except ImportError as err:  # pragma: no cover - exercised only without TensorFlow
    raise ImportError(
        "convexlayers.tensorflow needs TensorFlow (2.16 or later, with Keras 3): "
        'pip install "convexlayers[tensorflow]" (or pip install tensorflow-cpu).'
    ) from err

if int(_keras.__version__.split(".")[0]) < 3:  # pragma: no cover - TensorFlow < 2.16
    raise ImportError(
        f"convexlayers.tensorflow needs Keras 3 (TensorFlow 2.16 or later); found Keras "
        f'{_keras.__version__} with TensorFlow {_tf.__version__}: pip install -U '
        '"convexlayers[tensorflow]".'
    )

from convexlayers.tensorflow._layer import CvxpyLayer

__all__ = ["CvxpyLayer"]
