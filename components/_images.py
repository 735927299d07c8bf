"""The one place components take their ``base_image`` from (see ``coderforge.k8s.images``): a step's
resource class in the step table decides its image."""

from coderforge.k8s.images import image_for

DATA_IMAGE = image_for("data")
TRAIN_IMAGE = image_for("train")
VLLM_IMAGE = image_for("vllm")

# "gpu" (evaluate) runs in the vLLM image: it serves each model with vLLM (eval.backend: vllm), which the
# training image does not have (its torch pin differs from vLLM's); the vLLM image has torch and
# transformers for the in-process metrics too.
IMAGE_OF_RESOURCES = {"light": DATA_IMAGE, "ray": TRAIN_IMAGE, "gpu": VLLM_IMAGE, "vllm": VLLM_IMAGE}
