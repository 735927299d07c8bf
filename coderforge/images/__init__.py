"""Container images and the container engine: building every image from the repository
(``coderforge images build``) and running the recipe DAG with each step in its image
(``coderforge run RECIPE --runner docker``).

Modules: :mod:`.engine` (find a Docker daemon, or start a private one that is stopped afterwards),
:mod:`.base` (a Debian base image made with debootstrap where no registry is reachable),
:mod:`.context` (the build context and build arguments: pip sources, CA certificates),
:mod:`.build` (build the images of ``coderforge/k8s/images.yaml``, report time, size and what fills them),
:mod:`.runner` (kfp.local's ``DockerRunner`` with per-step container settings: paths, uid, shared memory,
the sandbox's privileges), :mod:`.privileges` (the least privilege the sandbox needs in a container),
:mod:`.cli`.
"""
