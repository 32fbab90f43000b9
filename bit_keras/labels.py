"""Class names of a zoo entry's head: shipped with the entry, or the official label file (downloaded once).

Example:
    >>> from bit_keras.labels import get_labels
    >>> get_labels("BiT-M-R50x1-CIFAR10")[:3]
    ['airplane', 'automobile', 'bird']
"""

from __future__ import annotations

from bit_keras.zoo import get_model_info


def get_labels(name: str) -> list[str]:
    """The class names of zoo entry ``name``'s head, index i naming output i.

    ILSVRC-2012 and ImageNet-21k heads use the official WordNet lemma files, downloaded into the cache
    on first use; the file must hold one line per class.

    Example:
        >>> len(get_labels("BiT-M-R50x1-CIFAR10"))
        10
    """
    info = get_model_info(name)
    if info.labels is not None:
        return list(info.labels)
    if info.labels_url is None:
        raise ValueError(f"{info.name} has no published label names ({info.num_classes} classes)")
    from bit_keras.download import download

    path = download(info.labels_url, progress=False)
    labels = path.read_text(encoding="utf-8").splitlines()
    if len(labels) != info.num_classes:
        raise ValueError(
            f"label file {path} has {len(labels)} lines but {info.name} has {info.num_classes} classes; "
            "delete the file to download it again"
        )
    return labels
