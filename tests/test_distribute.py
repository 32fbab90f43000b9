"""Strategy selection (the multi-device training tests live in tests/test_pretrain.py)."""

import json

import pytest
import tensorflow as tf

from bit_keras.errors import ConfigError
from bit_keras.train import distribute


def test_auto_on_one_cpu_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(key, raising=False)
    strategy = distribute.get_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert distribute.get_strategy(None) is strategy


def test_a_strategy_object_passes_through():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert distribute.get_strategy(strategy) is strategy


def test_forced_kinds():
    assert isinstance(distribute.get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    mirrored = distribute.get_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == max(1, len(tf.config.list_logical_devices("GPU")))  # every GPU, else the CPU


def test_unknown_kind_names_the_choices():
    with pytest.raises(ConfigError, match="unknown strategy 'gpu'; choose from auto, tpu, multi_worker"):
        distribute.get_strategy("gpu")


def test_tf_config_parsing():
    cluster = {"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}
    assert distribute.tf_config_workers({"TF_CONFIG": json.dumps(cluster)}) == 3
    assert distribute.tf_config_workers({}) == 0
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config_workers({"TF_CONFIG": "{nope"})



def test_replica_batch_size_must_divide():
    class TwoReplicas:
        num_replicas_in_sync = 2

    assert distribute.replica_batch_size(512, TwoReplicas()) == 256
    with pytest.raises(ConfigError, match="global batch 7 is not divisible by the 2 replicas"):
        distribute.replica_batch_size(7, TwoReplicas())


def test_chief_on_one_machine():
    assert distribute.is_chief()


def test_tpu_detection_from_the_environment():
    assert distribute.tpu_configured({"TPU_NAME": "my-tpu"})
    assert distribute.tpu_configured({"COLAB_TPU_ADDR": "10.0.0.2:8470"})
