"""The one place components take their ``base_image`` from (see ``coderforge.k8s.images``): a step's
resource class in the step table decides its image."""

from coderforge.k8s.images import image_for

DATA_IMAGE = image_for("data")
TRAIN_IMAGE = image_for("train")
VLLM_IMAGE = image_for("vllm")

IMAGE_OF_RESOURCES = {"light": DATA_IMAGE, "ray": TRAIN_IMAGE, "gpu": TRAIN_IMAGE, "vllm": VLLM_IMAGE}
