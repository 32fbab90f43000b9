"""Data: image sources (folders, arrays, tf.data, tensorflow-datasets), few-shot sampling, input pipelines.

Imports nothing from the rest of bit_keras but its errors and atomic writes.
"""
