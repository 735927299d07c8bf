"""The one place components take their ``base_image`` from (see ``coderforge.k8s.images``)."""

from coderforge.k8s.images import image_for

DATA_IMAGE = image_for("data")
TRAIN_IMAGE = image_for("train")
