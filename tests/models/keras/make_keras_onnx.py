"""Writes the files beside it: a Keras CNN converted to ONNX by tf2onnx, an input and Keras's own outputs.

Not run by the tests (TensorFlow is not one of optiforge's dependencies); the tests read its files. Regenerate
in an environment with TensorFlow and tf2onnx (written with tensorflow-cpu 2.21, Keras 3.15, tf2onnx 1.17):

    python tests/models/keras/make_keras_onnx.py
"""

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf2onnx

HERE = Path(__file__).parent

tf.random.set_seed(0)
inputs = tf.keras.Input(shape=(8, 8, 1), name="pixels")  # channels last, as Keras lays images out
x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
x = tf.keras.layers.Dense(32, activation="relu")(x)
outputs = tf.keras.layers.Dense(10)(x)
model = tf.keras.Model(inputs, outputs)
signature = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name="pixels"),)
tf2onnx.convert.from_function(
    tf.function(lambda pixels: model(pixels)),
    input_signature=signature,
    opset=17,
    output_path=str(HERE / "keras_cnn.onnx"),
)
example = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
np.save(HERE / "keras_input.npy", example)
np.save(HERE / "keras_output.npy", model(example).numpy())
